"""Pieces every control-plane command shares: --home, --wait, the store, output."""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import click

from ca.home import resolve_home

from .errors import SidecarError
from .registry import Registry, SidecarRecord
from .state.store import MeshStore

home_option = click.option(
    "--home", help="Mesh state directory (default $TRUSTMESH_HOME or ./.trustmesh)."
)


def wait_options(func):
    func = click.option(
        "--timeout",
        "wait_timeout",
        type=click.FloatRange(0.1, 600),
        default=10.0,
        show_default=True,
        help="Seconds --wait waits before failing.",
    )(func)
    return click.option(
        "--wait",
        is_flag=True,
        help="Return once every running sidecar enforces this change.",
    )(func)


def open_store(home: str | None) -> tuple[Path, MeshStore]:
    path = resolve_home(home, create=True)
    return path, MeshStore(path)


def admin_status(record: SidecarRecord, timeout: float = 1.0) -> dict | None:
    """A running sidecar's ``/v1/status``, or None if it does not answer."""
    try:
        with urllib.request.urlopen(
            f"http://{record.admin}/v1/status", timeout=timeout
        ) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def wait_for_generation(home: Path, generation: int, timeout: float) -> list[str]:
    """Wait until every running sidecar enforces ``generation``; return their names.

    Every sidecar watches the whole store, so each one's reported generation moves with every
    change, including those that do not touch its own policy — which makes "all running
    sidecars" the right set to wait for, and a sidecar stuck on a broken file shows as lagging.
    """
    registry = Registry(home)
    deadline = time.monotonic() + timeout
    while True:
        lagging = []
        records = registry.records()
        for record in records:
            status = admin_status(record)
            policy = (status or {}).get("policy") or {}
            seen = policy.get("generation")
            if not isinstance(seen, int) or seen < generation:
                detail = f"at version {seen}" if seen is not None else "not answering"
                if policy.get("error"):
                    detail += f", error: {policy['error']}"
                lagging.append(f"{record.namespace}/{record.app_id} ({detail})")
        if not lagging:
            return [f"{r.namespace}/{r.app_id}" for r in records]
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"timed out after {timeout:g}s waiting for version {generation}; lagging: "
                + "; ".join(lagging)
            )
        time.sleep(0.1)


def report_change(home: Path, generation: int | None, wait: bool, timeout: float) -> None:
    if generation is None:
        click.echo("no change")
        return
    if not wait:
        click.echo(f"applied as version {generation}")
        return
    sidecars = wait_for_generation(home, generation, timeout)
    enforced = ", ".join(sidecars) if sidecars else "no running sidecars"
    click.echo(f"applied as version {generation}; enforced by {enforced}")


def fail(exc: SidecarError | Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def expiry_text(not_after: str | None) -> str:
    if not not_after:
        return "-"
    try:
        when = dt.datetime.fromisoformat(not_after)
    except ValueError:
        return not_after
    left = when - dt.datetime.now(dt.UTC)
    minutes = int(left.total_seconds() // 60)
    return f"{when:%Y-%m-%d %H:%M}Z (in {minutes // 60}h{minutes % 60:02d}m)"
