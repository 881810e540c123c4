"""``trustmesh stop`` and ``trustmesh list``: finding runs and sidecars, stopping them, listing.

Stopping a run (``stop -f``) asks its runner with SIGTERM, so the runner stops its children in
order; if the runner is gone (killed with SIGKILL), the children it recorded in the run-state
file are stopped directly, each only if it is still the very process that was started.

Stopping one app (``stop --app-id``) signals the app's process group and then its sidecar (apps
before sidecars, as a whole run stops). A runner that owns them sees the exits it did not ask
for, reports them, and keeps its other apps running. A sidecar started by hand (no run) is
found through the registry and stopped alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from ..cli_support import admin_status
from ..registry import Registry, pid_alive
from ..state.store import MeshStore
from .errors import RunnerError
from .runstate import ChildRecord, all_states, read_state, remove_state, state_path
from .supervisor import group_alive

POLL = 0.05


@dataclass(frozen=True)
class Target:
    """A process (or process group) to stop and wait for."""

    label: str
    pid: int
    group: bool  # signal and wait for the whole process group

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.group:
                os.killpg(self.pid, signum)
            else:
                os.kill(self.pid, signum)

    def alive(self) -> bool:
        if self.group:
            return group_alive(self.pid)
        # A zombie has exited; only its parent (maybe a shell, maybe a test) has yet to reap it.
        return pid_alive(self.pid) and not is_zombie(self.pid)


def is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].startswith("Z")


async def wait_gone(targets: list[Target], timeout: float) -> list[Target]:
    """Wait until every target is gone; return those still alive after ``timeout``."""
    with trio.move_on_after(timeout):
        while any(t.alive() for t in targets):
            await trio.sleep(POLL)
    return [t for t in targets if t.alive()]


def _still_running(left: list[Target], timeout: float) -> RunnerError:
    names = ", ".join(f"{t.label} (pid {t.pid})" for t in left)
    return RunnerError(f"still running after {timeout:g}s: {names}")


def _child_target(child: ChildRecord) -> Target:
    labels = {"ca": "the CA", "guard": "the run's guard"}
    label = labels.get(child.role) or f"{child.role} {child.app_id!r}"
    return Target(label, child.pid, group=True)


async def stop_run(home: Path, run_file: Path, timeout: float) -> str:
    path = state_path(home, run_file)
    state = read_state(path)
    if state is None:
        raise RunnerError(f"no run of {run_file} is recorded in {home}")
    children = [_child_target(c) for c in state.children if c.is_same_process()]
    if state.runner_alive():
        runner = Target("the runner", state.runner_pid, group=False)
        runner.signal(signal.SIGTERM)
        left = await wait_gone([runner, *children], timeout)
        if left:
            raise _still_running(left, timeout)
        return f"stopped the run of {run_file} (runner pid {state.runner_pid})"
    # The runner died without cleaning up: stop what it left behind, apps first.
    order = {"app": 0, "sidecar": 1, "ca": 2, "guard": 3}
    records = sorted(
        (c for c in state.children if c.is_same_process()), key=lambda c: order.get(c.role, 3)
    )
    for record in records:
        _child_target(record).signal(signal.SIGTERM)
    left = await wait_gone(children, timeout / 2)
    for target in left:
        target.signal(signal.SIGKILL)
    left = await wait_gone(left, timeout / 2)
    if left:
        raise _still_running(left, timeout)
    remove_state(path, state.runner_pid)
    return (
        f"the runner of {run_file} (pid {state.runner_pid}) was gone; "
        f"stopped {len(children)} process(es) it left behind"
    )


async def stop_app(home: Path, app_id: str, namespace: str, timeout: float) -> str:
    targets: list[Target] = []
    for _, state in all_states(home):  # a runner that is gone may have left this app behind
        records = [c for c in state.children_for(app_id) if c.is_same_process()]
        records.sort(key=lambda c: 0 if c.role == "app" else 1)  # the app before its sidecar
        targets += [_child_target(c) for c in records]
    if not any(t.label.startswith("sidecar") for t in targets):
        record = Registry(home).lookup(app_id, namespace)
        if record is not None:
            targets.append(Target(f"sidecar {app_id!r}", record.pid, group=False))
    if not targets:
        raise RunnerError(f"app ID {app_id!r} (namespace {namespace}) is not running")
    for target in targets:
        target.signal(signal.SIGTERM)
    left = await wait_gone(targets, timeout)
    if left:
        raise _still_running(left, timeout)
    return f"stopped {', '.join(t.label for t in targets)}"


# --- list --------------------------------------------------------------------------------------


def age_text(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"


def _timestamp(epoch: float | None) -> str | None:
    """RFC 3339 UTC, as the audit log and the SVID times are written."""
    if not epoch:
        return None
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")
    return moment.replace("+00:00", "Z")


@dataclass(frozen=True)
class OrphanedRun:
    """A run whose runner is gone while processes it started still run."""

    run_file: str
    runner_pid: int
    pids: tuple[int, ...]
    app_ids: tuple[str, ...]


def orphaned_runs(home: Path) -> list[OrphanedRun]:
    out = []
    for _, state in all_states(home):
        if state.runner_alive():
            continue
        live = [c for c in state.children if c.is_same_process()]
        if live:
            app_ids = tuple(dict.fromkeys(c.app_id for c in live if c.app_id is not None))
            out.append(
                OrphanedRun(state.run_file, state.runner_pid, tuple(c.pid for c in live), app_ids)
            )
    return out


def list_rows(home: Path) -> list[dict]:
    """One row per running sidecar, with its app's pid and run file when a run started it.

    ``orphaned`` marks a sidecar (and app) whose runner is gone: nothing supervises them.
    """
    store = MeshStore(home)
    apps: dict[str, tuple[int | None, str, bool]] = {}
    for _, state in all_states(home):
        orphaned = not state.runner_alive()
        for child in state.children:
            if child.app_id is None or not child.is_same_process():
                continue
            pid = child.pid if child.role == "app" else None
            known = apps.get(child.app_id)
            apps[child.app_id] = (pid or (known[0] if known else None), state.run_file, orphaned)
    rows = []
    for record in Registry(home).records():
        status = admin_status(record) or {}
        svid = status.get("svid") or {}
        try:
            binding = store.binding(record.app_id, record.namespace)
        except Exception:  # a broken binding file must not break the listing
            binding = None
        app_pid, run_file, orphaned = apps.get(record.app_id, (None, None, False))
        rows.append(
            {
                "app_id": record.app_id,
                "namespace": record.namespace,
                "http_port": int(record.http.rpartition(":")[2]) if record.http else None,
                "inbound": record.inbound or None,
                "admin": record.admin,
                "app_port": record.app_port,
                "sidecar_pid": record.pid,
                "app_pid": app_pid,
                "svid_not_after": svid.get("not_after"),
                "configuration": (binding.configuration if binding else None) or None,
                "mcp_server": (binding.mcp_server or {}).get("path") if binding else None,
                "started_at": _timestamp(record.started_at),
                "age_seconds": max(0, int(time.time() - record.started_at))
                if record.started_at
                else None,
                "run_file": run_file,
                "orphaned": orphaned,
            }
        )
    return rows
