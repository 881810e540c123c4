"""The ``trustmesh`` command. Each package contributes its own group; this module wires them.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a
traceback: command code raises :class:`click.ClickException` (or a package error, translated
here), and :func:`main` is the only place that decides how it is shown.
"""

from __future__ import annotations

import sys

import click

from ca.cli import ca_group

from .cli_control import appid_group, apply_command, configuration_group
from .cli_mcp import mcpserver_group
from .cli_run import list_command, run_command, stop_command
from .cli_sidecar import sidecar_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trustmesh")
def cli() -> None:
    """trustmesh: zero-trust service invocation and tool-level policy for MCP servers."""


cli.add_command(ca_group)
cli.add_command(sidecar_command)
cli.add_command(configuration_group)
cli.add_command(apply_command)
cli.add_command(appid_group)
cli.add_command(mcpserver_group)
cli.add_command(run_command)
cli.add_command(stop_command)
cli.add_command(list_command)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="trustmesh", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("trustmesh: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"trustmesh: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code if exc.exit_code else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        click.echo(f"trustmesh: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(70)
