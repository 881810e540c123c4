"""``trustmesh run -f``, ``trustmesh stop``, ``trustmesh list``: Dapr's multi-app run, locally.

The commands are thin: parse, call :mod:`sidecar.runner`, print. Every failure leaves as one
:class:`click.ClickException` line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import trio

from .cli_home import home_option, resolve_cli_home
from .cli_support import expiry_text
from .errors import SidecarError
from .runner import RunnerError, load_run_file
from .runner.control import age_text, list_rows, orphaned_runs, stop_app, stop_run
from .runner.output import Console, log_path
from .runner.runfile import LOG_LEVELS, resolve_run_file_path, single_app_run
from .runner.runner import Runner, RunOptions


def _home(home: str | None, create: bool = True):
    return resolve_cli_home(home, create=create)


@click.command("run", context_settings={"allow_interspersed_args": False})
@click.option(
    "-f",
    "--run-file",
    "run_file",
    help="Dapr multi-app run template (a directory means <dir>/dapr.yaml).",
)
@click.option("--app-id", help="Run one app (the command after --) here, without a run file.")
@click.option(
    "--app-port",
    type=click.IntRange(0, 65535),
    help="With --app-id: the port the app listens on (0: pick one, passed as APP_PORT).",
)
@click.option(
    "--dapr-http-port",
    "--http-port",
    "http_port",
    type=click.IntRange(0, 65535),
    help="With --app-id: the sidecar's outbound port (default: a free one).",
)
@click.option("--mcp-server", is_flag=True, help="With --app-id: register it as an MCP server.")
@click.option(
    "--mcp-path", default="/mcp", show_default=True, help="With --mcp-server: its endpoint."
)
@click.option("--user", help="With --app-id: the unprivileged user the app runs as (as root).")
@click.option(
    "--log-level",
    type=click.Choice(sorted(LOG_LEVELS)),
    default="info",
    show_default=True,
    help="With --app-id: the sidecar's log level.",
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
@click.option(
    "--progress-every",
    type=click.FloatRange(0.05, 600),
    default=5.0,
    hidden=True,  # for tests: how often a slow start-up says what it waits for
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@home_option
def run_command(
    run_file: str | None,
    app_id: str | None,
    app_port: int | None,
    http_port: int | None,
    mcp_server: bool,
    mcp_path: str,
    user: str | None,
    log_level: str,
    command: tuple[str, ...],
    progress_every: float,
    startup_timeout: float,
    grace: float,
    home: str | None,
) -> None:
    """Run the apps of a Dapr run template (-f), or one app (--app-id … -- CMD…), each with a
    sidecar, plus the bundled CA."""
    if (run_file is None) == (app_id is None):
        raise click.UsageError("give either -f FILE or --app-id ID [-- COMMAND…]")
    single_only = {
        "--app-port": app_port is not None,
        "--dapr-http-port": http_port is not None,
        "--mcp-server": mcp_server,
        "--user": user is not None,
        "a command after --": bool(command),
    }
    if run_file is not None and any(single_only.values()):
        given = ", ".join(name for name, set_ in single_only.items() if set_)
        raise click.UsageError(f"{given}: only with --app-id (a run file sets these per app)")
    try:
        if run_file is not None:
            run = load_run_file(run_file)
        else:
            assert app_id is not None
            run = single_app_run(
                app_id,
                command,
                app_dir=Path.cwd(),
                app_port=app_port,
                http_port=http_port,
                mcp_path=mcp_path if mcp_server else None,
                user=user,
                log_level=log_level,
            )
    except SidecarError as exc:
        raise click.ClickException(str(exc)) from None
    opts = RunOptions(
        _home(home), startup_timeout=startup_timeout, grace=grace, progress_every=progress_every
    )
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
    for orphan in orphaned_runs(path):
        if Path(orphan.run_file).is_file():
            how = f"'trustmesh stop -f {orphan.run_file}'"
        else:  # a single-app run (--app-id): no file to name
            how = " and ".join(f"'trustmesh stop --app-id {a}'" for a in orphan.app_ids)
        click.echo(
            f"warning: the runner of {orphan.run_file} (pid {orphan.runner_pid}) is gone, but "
            f"{len(orphan.pids)} process(es) it started still run; stop them with {how}",
            err=True,
        )
    for row in rows:  # the table shows the data as text; -o json keeps the data
        row["svid_expiry"] = expiry_text(row["svid_not_after"])
        row["age"] = age_text(row["age_seconds"])
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


FOLLOW_POLL = 0.2


@click.command("logs")
@click.option("--app-id", required=True, help="The app whose log to print.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing lines as they are written.")
@home_option
def logs_command(app_id: str, follow: bool, home: str | None) -> None:
    """Print an app's log: its own and its sidecar's lines from 'trustmesh run' (home/logs)."""
    path = log_path(_home(home, create=False), app_id)
    try:
        log = path.open("rb")
    except FileNotFoundError:
        raise click.ClickException(
            f"no log for app ID {app_id!r} in {path.parent} (apps started by 'trustmesh run' "
            "log there unless appLogDestination and daprdLogDestination are 'console')"
        ) from None
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    out = click.get_binary_stream("stdout")
    with log:
        try:
            while True:
                chunk = log.read(65536)
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif not follow:
                    return
                else:
                    time.sleep(FOLLOW_POLL)
        except (KeyboardInterrupt, BrokenPipeError):
            return
