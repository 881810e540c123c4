"""``--home`` for every command, kept apart from the other shared CLI helpers.

``trustmesh sidecar`` reads its flags in a process that lives only until it hands over to the
serving one (:mod:`sidecar.serve`); it needs the home and nothing else of
:mod:`sidecar.cli_support` (the store, the registry, YAML), so it imports this module alone.
Every sidecar start — a user's, the runner's, each test's — pays for what this process imports.
"""

from __future__ import annotations

from pathlib import Path

import click

from ca._errors import CAError
from ca.home import resolve_home

HOME_HELP = (
    "Mesh home (default: $TRUSTMESH_HOME, else the nearest .trustmesh/ in this directory or "
    "its parents, else ./.trustmesh). Also accepted before the subcommand."
)
home_option = click.option("--home", help=HOME_HELP)


def resolve_cli_home(option: str | None, *, create: bool) -> Path:
    """The mesh home every command uses (see :func:`ca.home.resolve_home` for the order).

    ``create`` only for commands that start something living in the home (a sidecar, a run);
    commands that read never create it, and the store creates it on its first write.
    """
    try:
        return resolve_home(option, create=create)
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
