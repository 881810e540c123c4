"""The ``trustmesh`` command. Each package contributes its own group; this module wires them.

Every failure a user can cause ends as one line on stderr and a non-zero exit, never a
traceback: command code raises :class:`click.ClickException` (or a package error, translated
here), and :func:`main` is the only place that decides how it is shown.
"""

from __future__ import annotations

import importlib
import sys

import click

# Each subcommand's module is imported only when that subcommand runs: a sidecar process should
# not carry the runner, the CA service or the control-plane commands in its memory.
COMMANDS = {
    "ca": ("ca.cli", "ca_group"),
    "sidecar": ("sidecar.cli_sidecar", "sidecar_command"),
    "configuration": ("sidecar.cli_control", "configuration_group"),
    "apply": ("sidecar.cli_control", "apply_command"),
    "appid": ("sidecar.cli_control", "appid_group"),
    "mcpserver": ("sidecar.cli_mcp", "mcpserver_group"),
    "run": ("sidecar.cli_run", "run_command"),
    "stop": ("sidecar.cli_run", "stop_command"),
    "list": ("sidecar.cli_run", "list_command"),
    "logs": ("sidecar.cli_run", "logs_command"),
    "audit": ("sidecar.cli_audit", "audit_group"),
    "k8s": ("sidecar.k8s.cli", "k8s_group"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trustmesh")
def cli() -> None:
    """trustmesh: zero-trust service invocation and tool-level policy for MCP servers."""


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
