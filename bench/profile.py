"""Where a sidecar's time goes: py-spy samples under the bench load, summarised.

``python -m bench --profile`` attaches ``py-spy record`` (blocking mode, for whole stacks; idle
samples excluded, so percentages are of the time the process was actually running) to both
sidecars while wrk drives the trustmesh path, keeps the raw collapsed stacks (flamegraph input) in
``bench/results/profile/``, and prints for each sidecar the functions with the most self time,
the most inclusive time, and self time grouped by area (TLS, h11, trio, sidecar modules, …).
py-spy is a profiling tool only, not a dependency: install it into the venv when you need it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .deps import which
from .procs import BenchError, Managed

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else which("py-spy")
    if found is None:
        raise BenchError(
            "--profile needs py-spy: .venv/bin/pip install py-spy (a profiling tool, "
            "not a project dependency)"
        )
    return found


def record(spy: str, proc: Managed, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen:
    argv = [spy, "record", "--pid", str(proc.pid), "--rate", str(rate)]
    argv += ["--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_recording(popen: subprocess.Popen, timeout: float) -> None:
    try:
        _, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        popen.kill()
        popen.wait()
        raise BenchError("py-spy did not finish") from exc
    if popen.returncode != 0:
        raise BenchError(f"py-spy failed: {err.strip()[-500:]}")


def short_file(path: str) -> str:
    for marker in ("site-packages/", "/lib/python3.", "/work/main/"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3." else tail
    return path


# Frames every sample passes through on its way to the event loop: no news in "inclusive".
ENTRY_FILES = ("<frozen runpy>", "click/", "sidecar/__main__.py", "sidecar/cli.py")
ENTRY_FILES += ("sidecar/cli_sidecar.py",)
ENTRY_FUNCS = {("run", "trio/_core/_run.py"), ("unrolled_run", "trio/_core/_run.py")}


def _is_entry(func: str, file: str) -> bool:
    return file.startswith(ENTRY_FILES) or (func, file) in ENTRY_FUNCS


def area(func: str, file: str) -> str:
    """A coarse bucket for a leaf frame: where the CPU was spent.

    C calls show up as their Python caller: ``SSLObject.do_handshake`` is OpenSSL doing a
    handshake, ``SSLObject.read/write`` is record crypto, trio's ``_nonblocking_helper`` is the
    send/recv system call itself.
    """
    if file.startswith("sidecar/") or file.startswith("identity/"):
        return file.removesuffix(".py")
    if file == "ssl.py":
        if "do_handshake" in func:
            return "TLS handshakes (OpenSSL, via ssl.py)"
        return "TLS records (OpenSSL, via ssl.py)"
    if file == "trio/_socket.py":
        return "socket syscalls (trio/_socket.py)"
    if file.startswith("socket.py") or file.startswith("selectors.py"):
        return "socket"
    top = file.split("/", 1)[0]
    if top in ("trio", "h11", "structlog", "json", "outcome", "sniffio", "attr", "logging"):
        return top
    return top.removesuffix(".py")


@dataclass
class Summary:
    name: str
    samples: int
    self_time: list[tuple[str, float]]
    inclusive: list[tuple[str, float]]
    areas: list[tuple[str, float]]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "samples": self.samples,
            "self": self.self_time,
            "inclusive": self.inclusive,
            "areas": self.areas,
        }

    def render(self, top: int = 15) -> str:
        lines = [f"{self.name}: {self.samples} samples of running time"]
        lines.append("  self time by area:")
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in self.areas[:top]]
        lines.append("  self time by function:")
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in self.self_time[:top]]
        lines.append("  inclusive time (functions below the event loop):")
        lines += [f"    {pct:5.1f}%  {name}" for name, pct in self.inclusive[:top]]
        return "\n".join(lines)


def summarise(name: str, raw: Path, top: int = 25) -> Summary:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        funcs = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            if match is None:
                continue  # "process …" / "thread …" pseudo-frames
            funcs.append((match["func"], short_file(match["file"])))
        if not funcs:
            continue
        total += count
        func, file = funcs[-1]
        self_time[f"{func} ({file})"] += count
        areas[area(func, file)] += count
        for seen in {f"{f} ({p})" for f, p in funcs if not _is_entry(f, p)}:
            inclusive[seen] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)]

    if total == 0:
        return Summary(name, 0, [], [], [])
    return Summary(name, total, pct(self_time), pct(inclusive), pct(areas))


def profile_sidecars(
    sidecars: list[Managed], run_load, seconds: float, outdir: Path, label: str
) -> list[Summary]:
    """Record every sidecar while ``run_load(seconds)`` runs; return one summary per sidecar."""
    spy = py_spy()
    outdir.mkdir(parents=True, exist_ok=True)
    recordings = []
    for proc in sidecars:
        out = outdir / f"{label}-{proc.name}.txt"
        recordings.append((proc, out, record(spy, proc, seconds + 1, out)))
    time.sleep(0.5)  # let py-spy attach before the load starts
    try:
        run_load(seconds)
    finally:
        for _, _, popen in recordings:
            wait_recording(popen, seconds + 30)
    return [summarise(f"{proc.name} ({label})", out) for proc, out, _ in recordings]
