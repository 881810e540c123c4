"""Processes the bench starts, and what the kernel says they cost.

Every process is registered before anything waits on it, so ``stop_all`` (SIGTERM, then
SIGKILL after a grace period) reaches all of them from a ``finally``, Ctrl+C included.
CPU time and memory come from ``/proc``: ``utime + stime`` in clock ticks (all threads of a
process) and ``VmRSS``/``VmHWM``, summed over the process and its descendants, so that an nginx
master and its worker count as one proxy.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 30.0


class BenchError(Exception):
    """Something the bench cannot work around; the message is the one line a user reads."""


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may hold spaces and parentheses: split after its closing parenthesis.
    return text[text.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents.setdefault(int(_stat(int(entry))[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Managed:
    name: str
    popen: subprocess.Popen
    workdir: Path
    ready: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)]

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.tree():
            with contextlib.suppress(OSError, IndexError):
                fields = _stat(pid)
                ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
        return ticks / CLK_TCK

    def rss_kb(self) -> int:
        return sum(_status_kb(pid, "VmRSS") for pid in self.tree())

    def peak_rss_kb(self) -> int:
        return sum(_status_kb(pid, "VmHWM") for pid in self.tree())

    def log_tail(self, limit: int = 2000) -> str:
        parts = []
        for path in sorted(self.workdir.glob(f"{self.name}.*.log")) + sorted(
            self.workdir.glob(f"{self.name}/*.log")
        ):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(parts)

    def address(self, key: str) -> tuple[str, int]:
        host, _, port = self.ready[key].rpartition(":")
        return host, int(port)


class Processes:
    def __init__(self, workdir: Path, cwd: Path) -> None:
        self.workdir = workdir
        self.cwd = cwd
        self.started: list[Managed] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Managed:
        stdout = (self.workdir / f"{name}.stdout.log").open("wb")
        stderr = (self.workdir / f"{name}.stderr.log").open("wb")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.cwd,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        except OSError as exc:
            raise BenchError(f"cannot start {name} ({argv[0]}): {exc.strerror or exc}") from exc
        finally:
            stdout.close()
            stderr.close()
        proc = Managed(name, popen, self.workdir)
        self.started.append(proc)
        return proc

    def wait_ready_line(self, proc: Managed, timeout: float = START_TIMEOUT) -> dict:
        """Wait for the ``{"event": "ready", ...}`` line a trustmesh process prints."""
        path = self.workdir / f"{proc.name}.stdout.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in path.read_bytes().splitlines():
                with contextlib.suppress(ValueError):
                    payload = json.loads(line)
                    if isinstance(payload, dict) and payload.get("event") == "ready":
                        proc.ready = payload
                        return payload
            if proc.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError(f"{proc.name} did not become ready:\n{proc.log_tail()}")

    def wait_port(self, proc: Managed, port: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.05)
        raise BenchError(f"{proc.name} is not listening on 127.0.0.1:{port}:\n{proc.log_tail()}")

    def stop(self, proc: Managed, grace: float = 12.0) -> None:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(grace)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def stop_all(self, grace: float = 12.0) -> list[str]:
        """SIGTERM everything still running, newest first; SIGKILL what outlives ``grace``."""
        for proc in reversed(self.started):
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        killed = []
        for proc in self.started:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
                killed.append(proc.name)
        return killed


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent not idle since boot (``/proc/stat``, first line)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU seconds of this process's waited-for children (wrk runs), from getrusage."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
