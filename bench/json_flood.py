"""What a flood of expensive-to-parse bodies does to a well-behaved caller (#10.8).

::

    calm caller (c=1) ─┐
                       ├─► sidecar(bench-client) ══ mTLS ══► sidecar(bench-server) ─► app
    flooders (c=N)   ──┘        (MCP server: every POST body inspected)

Two real sidecars on 127.0.0.1 (certificates from a fresh CA, ``bench-server`` registered as an
MCP server, ``bench-client`` granted ``echo``), a tiny threaded app answering every POST with a
fixed JSON-RPC result. The calm caller sends a ~200-byte ``tools/call`` on one kept-alive
connection, first alone, then while ``--flooders`` processes each post the review's body — a
4 MiB ``[{},{},...]`` inside a granted ``tools/call`` — as fast as they get answers. Prints the
calm caller's p50/p99 both ways and what the floods got back (413 once the value limit is in).
``--kind string`` floods with bodies as large but cheap to parse (one 4 MiB string, for a tool
not granted: 403), which crosses the same data plane: the difference is what parsing costs.

``.venv/bin/python -m bench.json_flood [--requests N] [--flooders N] [--kind K] [--source DIR]``;
``--source`` runs the sidecars from another checkout (e.g. ``git archive`` of an older commit)
for a before/after comparison. Loopback only; everything is stopped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .procs import BenchError, Processes
from .topology import APP_RESPONSE, CLIENT_ID, SERVER_ID, make_pki, start_sidecar

REPO = Path(__file__).resolve().parent.parent
FOUR_MIB = 4 * 1024 * 1024
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}


def calm_body(i: int) -> bytes:
    params = {"name": "echo", "arguments": {"message": f"calm call {i}", "n": i}}
    return json.dumps(
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": params}
    ).encode()


def flood_body(kind: str) -> bytes:
    """``objects``: the review's body; ``string``: as large, as far, but cheap to parse."""
    if kind == "string":  # an ungranted tool with one 4 MiB string: parsed in C, refused 403
        head = b'{"jsonrpc":"2.0","id":"flood","method":"tools/call","params":{"name":"rm",'
        head += b'"arguments":{"message":"'
        return head + b"x" * (FOUR_MIB - 64 - len(head)) + b'"}}}'
    head = b'{"jsonrpc":"2.0","id":"flood","method":"tools/call","params":{"name":"echo",'
    head += b'"arguments":{"message":"x","pad":['
    tail = b"]}}}"
    count = (FOUR_MIB - 64 - len(head) - len(tail)) // 3
    return head + b",".join([b"{}"] * count) + tail


class _App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # head and body are written apart: no 40 ms delayed-ACK stall

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = APP_RESPONSE.encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _connect(host: str, port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers=HEADERS)
    response = conn.getresponse()
    response.read()
    return response.status


def _flooder(host: str, port: int, path: str, kind: str, stop, counts) -> None:
    body = flood_body(kind)
    conn = _connect(host, port)
    while not stop.is_set():
        try:
            status = _post(conn, path, body)
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = _connect(host, port)
            status = 0
        with counts.get_lock():
            counts[0] += 1
            counts[1] += status in (403, 413)
    conn.close()


def _calm_run(host: str, port: int, path: str, requests: int) -> list[float]:
    conn = _connect(host, port)
    latencies = []
    for i in range(requests):
        started = time.perf_counter()
        status = _post(conn, path, calm_body(i))
        latencies.append(time.perf_counter() - started)
        if status != 200:
            raise BenchError(f"the calm caller got HTTP {status}")
    conn.close()
    return latencies


def _summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def _tm(home: Path, source: Path, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(source)}
    argv = [sys.executable, "-m", "sidecar", *args, "--home", str(home)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=source, timeout=60)
    if done.returncode:
        raise BenchError(f"trustmesh {' '.join(args)} failed: {done.stderr.strip()}")


def run(requests: int, flooders: int, source: Path, kind: str) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="json-flood-"))
    os.environ["PYTHONPATH"] = str(source)  # the sidecars run from --source
    procs = Processes(workdir, source)
    app = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        pki = make_pki(workdir)
        home = workdir / "home"
        start_sidecar(procs, SERVER_ID, home, pki.server_dir, app.server_address[1])
        client = start_sidecar(procs, CLIENT_ID, home, pki.client_dir)
        _tm(home, source, "mcpserver", "create", SERVER_ID, "--wait")
        _tm(home, source, "mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
            "--allow-tools", "echo", "--wait")  # fmt: skip
        host, port = client.address("http")
        path = f"/v1.0/invoke/{SERVER_ID}/method/mcp"
        _calm_run(host, port, path, 50)  # warm-up: connections, pools, caches
        calm = _summary(_calm_run(host, port, path, requests))

        stop = multiprocessing.Event()
        counts = multiprocessing.Array("l", 2)
        workers = [
            multiprocessing.Process(target=_flooder, args=(host, port, path, kind, stop, counts))
            for _ in range(flooders)
        ]
        for worker in workers:
            worker.start()
        time.sleep(1.0)  # let the flood get going before measuring
        started = time.monotonic()
        flooded = _summary(_calm_run(host, port, path, requests))
        seconds = time.monotonic() - started
        stop.set()
        for worker in workers:
            worker.join(120)
        return {
            "source": str(source),
            "requests": requests,
            "flooders": flooders,
            "flood_kind": kind,
            "calm": calm,
            "during_flood": flooded,
            "floods_sent": counts[0],
            "floods_refused": counts[1],
            "floods_per_second": counts[0] / max(seconds, 1e-9),
        }
    finally:
        app.shutdown()
        procs.stop_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.json_flood", description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--source", type=Path, default=REPO)
    parser.add_argument("--kind", choices=("objects", "string"), default="objects")
    args = parser.parse_args(argv)
    try:
        result = run(args.requests, args.flooders, args.source.resolve(), args.kind)
    except BenchError as exc:
        print(f"json_flood: {exc}", file=sys.stderr)
        return 1
    calm, flooded = result["calm"], result["during_flood"]
    print(json.dumps(result, indent=2))
    print(
        f"calm p50 {calm['p50_ms']:.2f} ms, p99 {calm['p99_ms']:.2f} ms | during flood p50 "
        f"{flooded['p50_ms']:.2f} ms, p99 {flooded['p99_ms']:.2f} ms "
        f"({flooded['p50_ms'] / calm['p50_ms']:.1f}x p50) | {result['floods_sent']} floods, "
        f"{result['floods_refused']} refused ({args.kind})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
