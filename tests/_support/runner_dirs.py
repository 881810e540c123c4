"""Directories that apps started by ``trustmesh run`` can reach when the tests run as root.

As root, the runner starts every app as an unprivileged user (one of its own by default), which
cannot enter pytest's temporary directories (``/tmp/pytest-of-root`` is 0700, and pytest resets
it at every session start, so it cannot be opened up). :func:`app_reachable_dir` makes a fresh
0755 directory directly under the system temporary directory instead and removes it afterwards;
the mesh home the runner creates inside stays 0700.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def app_reachable_dir(prefix: str = "trustmesh-test-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def user_for_python_apps() -> str | None:
    """The ``user:`` a test's run file needs for apps run by this test's interpreter.

    None (the runner's default, a dynamic user under root) wherever such a user can run
    ``sys.executable``. Where it cannot (an interpreter under ``/root``, as pyenv installs it
    for root), ``"root"``: the runner then warns that the app shares the mesh's user. The
    trust-boundary tests do not use this; they run their app with the system interpreter.
    """
    if os.geteuid() != 0:
        return None
    from sidecar.runner.users import app_user, unreachable

    user = app_user(None, "probe")
    assert user is not None
    blocked = unreachable(user, Path("/"), [sys.executable], {})
    return "root" if blocked is not None else None


def pin_app_user(run_file: Path) -> Path:
    """Give ``run_file`` the ``common.user`` of :func:`user_for_python_apps`, if it needs one."""
    user = user_for_python_apps()
    if user is None:
        return run_file
    lines = run_file.read_text().splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip() == "common:":
            lines.insert(index + 1, f"  user: {user}\n")
            break
        if line.rstrip() == "apps:":
            lines[index:index] = ["common:\n", f"  user: {user}\n"]
            break
    else:
        raise AssertionError(f"{run_file}: no top-level 'common:' or 'apps:' line")
    run_file.write_text("".join(lines))
    return run_file
