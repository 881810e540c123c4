"""Real processes for integration and end-to-end tests, awaited by their ready line.

Every process started here is registered, so a fixture can assert that none outlives its test
and kill any that would.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRUSTMESH = [sys.executable, "-m", "sidecar"]
READY_TIMEOUT = 30.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    stderr_path: Path
    ready: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except OSError:
            return ""

    def address(self, key: str) -> tuple[str, int]:
        host, _, port = self.ready[key].rpartition(":")
        return host, int(port)

    def url(self, key: str = "http") -> str:
        return f"http://{self.ready[key]}"

    def stop(self, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def _read_ready(proc: Proc, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    stdout = proc.popen.stdout
    buffer = b""
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None and not select.select([stdout], [], [], 0)[0]:
            break
        readable, _, _ = select.select([stdout], [], [], 0.2)
        if not readable:
            continue
        byte = os.read(stdout.fileno(), 1)
        if not byte:
            break
        if byte != b"\n":
            buffer += byte
            continue
        line, buffer = buffer, b""
        try:
            payload = json.loads(line)
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("event") == "ready":
            return payload
    proc.stop(2)
    raise RuntimeError(f"{proc.name} did not become ready:\n{proc.stderr()[-3000:]}")


class ProcessSet:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(
        self, name: str, argv: list[str], env: dict | None = None, ready: bool = True
    ) -> Proc:
        stderr_path = self.workdir / f"{name}.stderr"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr_path.open("wb"),
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=REPO,
        )
        proc = Proc(name, popen, stderr_path)
        self.procs.append(proc)
        if ready:
            proc.ready = _read_ready(proc, READY_TIMEOUT)
        return proc

    def app(self, name: str = "app") -> Proc:
        return self.start(name, [sys.executable, "-m", "tests._support.testapp"])

    def sidecar(
        self,
        app_id: str,
        home: Path,
        *,
        svid_dir: Path | None = None,
        app_port: int | None = None,
        extra: list[str] | None = None,
        env: dict | None = None,
    ) -> Proc:
        argv = [*TRUSTMESH, "sidecar", "--app-id", app_id, "--home", str(home), "--http-port", "0"]
        if svid_dir is not None:
            argv += ["--svid-dir", str(svid_dir)]
        if app_port is not None:
            argv += ["--app-port", str(app_port)]
        return self.start(f"sidecar-{app_id}", argv + (extra or []), env=env)

    def stop_all(self) -> list[str]:
        """Stop everything; return the names of processes that had to be killed."""
        killed = []
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
                killed.append(proc.name)
        return killed
