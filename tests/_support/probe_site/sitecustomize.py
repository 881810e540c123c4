"""On ``PYTHONPATH``, makes every interpreter write the names in its ``sys.modules`` to
``$TRUSTMESH_PROBE_MODULES`` (one a line) when it receives SIGUSR1.

What a serving process has imported can only be seen from inside it. ``sitecustomize`` runs at
the start of every interpreter, including the one ``trustmesh sidecar`` execs into to serve, so
the sidecar is started by its real command, unchanged, and no hook lives in production code.
"""

from __future__ import annotations

import os
import signal
import sys

_PATH = os.environ.get("TRUSTMESH_PROBE_MODULES")


def _dump(_signum, _frame) -> None:
    with open(_PATH + ".tmp", "w") as handle:
        handle.write("\n".join(sorted(sys.modules)))
    os.replace(_PATH + ".tmp", _PATH)


if _PATH:
    signal.signal(signal.SIGUSR1, _dump)
