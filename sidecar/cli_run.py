"""``trustmesh run -f``, ``trustmesh stop``, ``trustmesh list``: Dapr's multi-app run, locally.

The commands are thin: parse, call :mod:`sidecar.runner`, print. Every failure leaves as one
:class:`click.ClickException` line.
"""

from __future__ import annotations

import json

import click
import trio

from .cli_support import home_option, resolve_cli_home
from .errors import SidecarError
from .runner import RunnerError, load_run_file
from .runner.control import list_rows, stop_app, stop_run
from .runner.output import Console
from .runner.runfile import resolve_run_file_path
from .runner.runner import Runner, RunOptions


def _home(home: str | None, create: bool = True):
    return resolve_cli_home(home, create=create)


@click.command("run")
@click.option(
    "-f",
    "--run-file",
    "run_file",
    required=True,
    help="Dapr multi-app run template (a directory means <dir>/dapr.yaml).",
)
@click.option(
    "--timeout",
    "startup_timeout",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Seconds each sidecar and app gets to become ready.",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 600),
    default=10.0,
    show_default=True,
    help="Seconds a child gets after SIGTERM before SIGKILL.",
)
@home_option
def run_command(run_file: str, startup_timeout: float, grace: float, home: str | None) -> None:
    """Run the apps of a Dapr run template, each with a sidecar, plus the bundled CA."""
    try:
        run = load_run_file(run_file)
    except SidecarError as exc:
        raise click.ClickException(str(exc)) from None
    opts = RunOptions(_home(home), startup_timeout=startup_timeout, grace=grace)
    runner = Runner(run, opts, Console())
    try:
        code = trio.run(runner.run)
    except RunnerError as exc:
        raise click.ClickException(str(exc)) from None
    if code:
        raise click.ClickException("every app has exited, and at least one failed")


@click.command("stop")
@click.option("-f", "--run-file", "run_file", help="Stop the run of this template (file or dir).")
@click.option("--app-id", help="Stop this app and its sidecar.")
@click.option("--namespace", default="default", show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 600),
    default=40.0,
    show_default=True,
    help="Seconds to wait for the processes to be gone.",
)
@home_option
def stop_command(
    run_file: str | None, app_id: str | None, namespace: str, timeout: float, home: str | None
) -> None:
    """Stop a run (-f) or one app (--app-id); wait until its processes are gone."""
    if (run_file is None) == (app_id is None):
        raise click.UsageError("give either -f FILE or --app-id ID")
    path = _home(home, create=False)
    try:
        if run_file is not None:
            message = trio.run(stop_run, path, resolve_run_file_path(run_file), timeout)
        else:
            message = trio.run(stop_app, path, app_id, namespace, timeout)
    except RunnerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(message)


def _cell(value) -> str:
    return "-" if value in (None, "") else str(value)


@click.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@home_option
def list_command(output: str, home: str | None) -> None:
    """List running sidecars (like 'dapr list')."""
    path = _home(home, create=False)
    rows = list_rows(path)
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No trustmesh instances found in {path}.")
        return
    columns = (
        ("APP ID", "app_id"),
        ("HTTP PORT", "http_port"),
        ("INBOUND", "inbound"),
        ("ADMIN", "admin"),
        ("APP PORT", "app_port"),
        ("SIDECAR PID", "sidecar_pid"),
        ("APP PID", "app_pid"),
        ("SVID EXPIRY", "svid_expiry"),
        ("CONFIGURATION", "configuration"),
        ("AGE", "age"),
    )
    table = [[title for title, _ in columns]]
    table += [[_cell(row[key]) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
