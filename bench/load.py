"""The load: wrk posting one MCP ``tools/call`` on kept-alive connections.

The request is fixed by ``wrk.method/body/headers`` (no per-request Lua, which keeps wrk on its
fast path); a ``done`` hook prints wrk's own summary as one JSON line, so nothing is scraped
from its human-readable output. Latencies are wrk's, in microseconds.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .procs import BenchError

# A ~200-byte JSON-RPC tools/call, with the headers an MCP 2026-07-28 client sends.
REQUEST_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_forecast",'
    '"arguments":{"city":"Lisbon","country":"PT","days":3,"units":"metric"},'
    '"_meta":{"progressToken":"bench-0001"}}}'
)

SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "get_forecast"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.status_errors
            + self.timeouts
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "rps": round(self.rps, 1), "errors": self.errors}


def write_script(directory: Path) -> Path:
    path = directory / "tools_call.lua"
    path.write_text(SCRIPT.format(body=REQUEST_BODY))
    return path


def threads_for(connections: int) -> int:
    return 1 if connections == 1 else 2


def wrk_argv(wrk: str, script: Path, url: str, connections: int, seconds: float) -> list[str]:
    return [
        wrk,
        f"-t{threads_for(connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run_wrk(wrk: str, script: Path, url: str, connections: int, seconds: float) -> WrkResult:
    argv = wrk_argv(wrk, script, url, connections, seconds)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            return WrkResult(**json.loads(line.removeprefix("BENCHJSON ")))
    raise BenchError(f"wrk gave no summary ({done.returncode}): {done.stderr or done.stdout}")
