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


class HomeDefault(dict):
    """``trustmesh --home H SUBCOMMAND``: H becomes the default of every subcommand's --home.

    Click hands each sub-context ``default_map.get(<command name>)``; answering with this same
    mapping at every level reaches nested commands (``configuration create``) and any command
    group (``ca``) without each one knowing about the top-level option. A --home given after
    the subcommand still wins, as an explicit value beats a default.
    """

    def __init__(self, home: str) -> None:
        super().__init__(home=home)

    def get(self, key, default=None):
        return self["home"] if key == "home" else self


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trustmesh")
@click.option("--home", help="Mesh home for the subcommand (same as its own --home).")
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """trustmesh: zero-trust service invocation and tool-level policy for MCP servers."""
    if home:
        ctx.default_map = HomeDefault(home)


def known_error_message(exc: BaseException) -> str | None:
    """The one line to show for an error a user can cause, or None for a bug.

    Every package's error hierarchy is user-facing by design (its messages name the file, field
    or App ID at fault), and an OSError is the machine saying no (a full disk, a read-only
    home): neither is an "internal error". Each package's base class is listed once, here, so a
    new error in any package is covered the day it is written.
    """
    from ca import CAError
    from identity import IdentityError

    from .errors import SidecarError

    if isinstance(exc, BaseExceptionGroup):  # trio wraps task failures
        found = (known_error_message(inner) for inner in exc.exceptions)
        return next((message for message in found if message is not None), None)
    if isinstance(exc, SidecarError | CAError | IdentityError):
        return str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return f"{exc.filename}: {reason}" if exc.filename else reason
    return None


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
        message = known_error_message(exc)
        if message is not None:
            click.echo(f"trustmesh: {message}", err=True)
            sys.exit(1)
        click.echo(
            f"trustmesh: internal error: {type(exc).__name__}: {exc} "
            "(a bug: please report it with the command that caused it)",
            err=True,
        )
        sys.exit(70)
