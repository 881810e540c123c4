"""The benchmark: the same MCP load direct, through two trustmesh sidecars, and through nginx.

Run it with ``make bench`` (or ``python -m bench``); see ``bench/README.md``.
"""
