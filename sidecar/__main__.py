"""``python -m sidecar`` is the ``trustmesh`` command (used where the script is not on PATH)."""

from .cli import main

main()
