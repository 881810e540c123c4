"""The run-state file: how ``trustmesh stop`` finds a run and its children.

``<home>/runs/<sha256(run file path)[:16]>.json`` holds the runner's pid, the run file, and every
child the runner started (role, App ID, pid, and the process's start time from ``/proc`` where
there is one, so a recycled pid is never mistaken for ours). The runner rewrites it atomically
whenever a child starts or exits and removes it when it ends. Keyed on the path, not the
template's ``name``, so editing the file between ``run`` and ``stop`` does not lose the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from identity import atomic_write

from ..registry import pid_alive

RUNS_DIR = "runs"


def group_alive(pgid: int) -> bool:
    """Some process is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


@dataclass
class ChildRecord:
    role: str  # "ca" | "sidecar" | "app"
    app_id: str | None
    pid: int
    start_ticks: int | None = None

    def is_same_process(self) -> bool:
        """Alive, and (where /proc tells) the very process we started, not a recycled pid."""
        if not pid_alive(self.pid):
            return False
        if self.start_ticks is None:
            return True
        return process_start_ticks(self.pid) == self.start_ticks


@dataclass
class RunState:
    run_file: str
    runner_pid: int
    name: str | None = None
    started_at: float = field(default_factory=time.time)
    runner_start_ticks: int | None = None
    children: list[ChildRecord] = field(default_factory=list)

    def runner_alive(self) -> bool:
        return ChildRecord(
            "runner", None, self.runner_pid, self.runner_start_ticks
        ).is_same_process()

    def children_for(self, app_id: str) -> list[ChildRecord]:
        return [c for c in self.children if c.app_id == app_id]


def runs_dir(home: Path) -> Path:
    return Path(home) / RUNS_DIR


def state_path(home: Path, run_file: Path) -> Path:
    digest = hashlib.sha256(str(run_file).encode()).hexdigest()[:16]
    return runs_dir(home) / f"{digest}.json"


def write_state(path: Path, state: RunState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(asdict(state), indent=2).encode(), mode=0o600)


def read_state(path: Path) -> RunState | None:
    try:
        data = json.loads(path.read_bytes())
        children = [ChildRecord(**c) for c in data.pop("children", [])]
        return RunState(**data, children=children)
    except (OSError, ValueError, TypeError):
        return None


def remove_state(path: Path, runner_pid: int) -> None:
    """Remove the file if it is still ours (a newer run of the same file may own it)."""
    state = read_state(path)
    if state is not None and state.runner_pid == runner_pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def all_states(home: Path) -> list[tuple[Path, RunState]]:
    directory = runs_dir(home)
    if not directory.is_dir():
        return []
    out = []
    for path in sorted(directory.glob("*.json")):
        state = read_state(path)
        if state is not None:
            out.append((path, state))
    return out


def own_record(role: str, app_id: str | None, pid: int) -> ChildRecord:
    return ChildRecord(role, app_id, pid, process_start_ticks(pid))


def this_runner(run_file: Path, name: str | None) -> RunState:
    pid = os.getpid()
    return RunState(str(run_file), pid, name, runner_start_ticks=process_start_ticks(pid))
