"""Pieces every control-plane command shares: --home, --wait, the store, output."""

from __future__ import annotations

import datetime as dt
import difflib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .cli_home import resolve_cli_home
from .errors import SidecarError
from .registry import Registry, SidecarRecord
from .state.store import MeshStore


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
    """The resolved home and its store; nothing is created until something is written."""
    path = resolve_cli_home(home, create=False)
    return path, MeshStore(path)


def looked_in(home: Path) -> str:
    """How "nothing found" messages name the place they looked: ``in HOME``, and why it is empty."""
    if not home.is_dir():
        return f"in {home} (no mesh there yet)"
    return f"in {home}"


def admin_status(record: SidecarRecord, timeout: float = 1.0) -> dict | None:
    """A running sidecar's ``/v1/status``, or None if it does not answer."""
    # Imported here: urllib.request brings http.client and email (~0.5 MiB), and a sidecar
    # process imports this module for --home alone; only CLI commands ask for a status.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"http://{record.admin}/v1/status", timeout=timeout
        ) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


@dataclass
class WaitOutcome:
    enforced: list[str] = field(default_factory=list)  # "namespace/app-id"
    # Sidecars that refuse the new version for the same reason they refused the one before it:
    # broken by something else, which this change neither caused nor can fix.
    already_broken: list[str] = field(default_factory=list)


def _enforcing(policy: dict) -> str:
    seen = policy.get("generation")
    return f"version {seen}" if isinstance(seen, int) else "no policy (it denies every call)"


def wait_for_generation(home: Path, generation: int, timeout: float) -> WaitOutcome:
    """Wait until every running sidecar enforces ``generation``.

    Every sidecar watches the whole store, so each one's reported generation moves with every
    change, including those that do not touch its own policy — which makes "all running
    sidecars" the right set to wait for. A sidecar that refuses the new version ends the wait
    at once, naming it; one that was already refusing for the same reason before this change
    is reported and left out, so one broken sidecar does not fail every operator's --wait.
    """
    registry = Registry(home)
    deadline = time.monotonic() + timeout
    while True:
        outcome, lagging = WaitOutcome(), []
        for record in registry.records():
            name = f"{record.namespace}/{record.app_id}"
            status = admin_status(record)
            policy = (status or {}).get("policy") or {}
            seen = policy.get("generation")
            if isinstance(seen, int) and seen >= generation:
                outcome.enforced.append(name)
                continue
            error, failed_at = policy.get("error"), policy.get("error_generation")
            if error and isinstance(failed_at, int) and failed_at >= generation:
                since = policy.get("error_since")
                if isinstance(since, int) and since < generation:
                    outcome.already_broken.append(
                        f"{name}, which has refused every version since {since}: {error}"
                    )
                    continue
                raise click.ClickException(
                    f"version {generation} is saved on disk, but sidecar {name} refused it "
                    f"and keeps enforcing {_enforcing(policy)}: {error}"
                )
            detail = f"at version {seen}" if status is not None else "not answering"
            lagging.append(f"{name} ({detail})")
        if not lagging:
            return outcome
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"timed out after {timeout:g}s waiting for version {generation} (the change is "
                "saved on disk); lagging: " + "; ".join(lagging)
            )
        time.sleep(0.1)


def report_change(home: Path, generation: int | None, wait: bool, timeout: float) -> None:
    if generation is None:
        click.echo("no change")
        return
    if not wait:
        click.echo(f"applied as version {generation}")
        return
    outcome = wait_for_generation(home, generation, timeout)
    enforced = ", ".join(outcome.enforced) if outcome.enforced else "no running sidecars"
    click.echo(f"applied as version {generation}; enforced by {enforced}")
    for broken in outcome.already_broken:
        click.echo(f"warning: not enforced by {broken}", err=True)


def change_line(kind: str, name: str, replaced: dict[tuple[str, str], int]) -> str:
    """``kind/name applied``, or, for a name that existed, which version it replaced."""
    version = replaced.get((kind, name))
    if version is None:
        return f"{kind.lower()}/{name} applied"
    what = f"version {version}" if version else "a copy written outside trustmesh"
    return f"{kind.lower()}/{name} replaced {what}"


def report_replaced(replaced: dict[tuple[str, str], int]) -> None:
    """One line per resource a change overwrote, naming the version it replaced."""
    for kind, name in replaced:
        click.echo(change_line(kind, name, replaced))


def known_app_ids(home: Path, store: MeshStore, namespace: str) -> set[str]:
    """App IDs the mesh has seen in ``namespace``: bound, running, or registered MCP servers."""
    known = {b.app_id for b in store.bindings() if b.namespace == namespace}
    known |= {r.app_id for r in Registry(home).records() if r.namespace == namespace}
    known |= set(store.names("MCPServerAccessPolicy"))
    return known


def closest(name: str, known: set[str]) -> str | None:
    """The known name ``name`` is most likely a typo of, if any is close enough."""
    matches = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def warn_unknown_app_ids(
    home: Path, store: MeshStore, app_ids: list[str], namespace: str = "default"
) -> None:
    """Warn (on stderr) about App IDs no app has used yet, with the closest known one.

    Accepted all the same: an app may join after its policy is written. But a typo in an App
    ID is a rule that silently never matches, so the operator hears about it now.
    """
    try:
        known = known_app_ids(home, store, namespace)
    except SidecarError:
        return  # a broken store file is reported by the commands that need it
    for app_id in dict.fromkeys(app_ids):
        if app_id in known:
            continue
        close = closest(app_id, known)
        hint = (
            f"did you mean {close!r}?" if close else "it will match once an app with that ID joins"
        )
        click.echo(
            f"warning: App ID {app_id!r} is new to the mesh in {home} (in namespace "
            f"{namespace!r} no running sidecar, binding or MCP server has it); {hint}",
            err=True,
        )


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
