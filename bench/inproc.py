"""CPU per request through both sidecars, measured in one process: a steadier A/B than the bench.

``python -m bench.inproc [--mcp] [-c 32] [-n 300] [--runs 3]`` runs the two sidecars of the bench
(the same SVIDs, the same request and answer, the MCP policy with ``--mcp``), a minimal app and
a minimal client as tasks of ONE trio run, and reports the process's CPU time per request minus
that of the same client talking to the app directly: what the sidecar pair costs. With
everything in one process there is no scheduling between processes to blur the figure, so it
moves much less from run to run than the per-process figures of ``make bench``, and a change of a
few percent shows. It is a development tool: the issue's targets are measured by ``make bench``
against nginx, and this figure is not comparable with theirs (no batching across processes,
one core).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import time
from pathlib import Path

import trio

from sidecar.http.socket_stream import DirectStream, detach
from sidecar.runtime import SidecarOptions, run_sidecar

from .load import REQUEST_BODY
from .topology import (
    APP_RESPONSE,
    CLIENT_ID,
    MCP_CLIENT_ID,
    MCP_SERVER_ID,
    SERVER_ID,
    apply_mcp_policy,
    make_pki,
)

ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: app\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(APP_RESPONSE), APP_RESPONSE.encode())
)


def request(host: bytes, target: bytes) -> bytes:
    body = REQUEST_BODY.encode()
    return (
        b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n"
        b"Mcp-Method: tools/call\r\nMcp-Name: get_forecast\r\nContent-Length: %d\r\n\r\n%s"
    ) % (target, host, len(body), body)


async def _receive(stream: DirectStream) -> bytes:
    data = stream.receive_nowait(65536)
    return data if data is not None else await stream.receive_some(65536)


def _message_end(buffer: bytes) -> int:
    """Where the first whole message in ``buffer`` ends (Content-Length framing), or -1."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    at = buffer.lower().find(b"content-length:", 0, head_end)
    length = int(buffer[at + 15 : buffer.index(b"\r\n", at)]) if at >= 0 else 0
    end = head_end + 4 + length
    return end if len(buffer) >= end else -1


async def _app(stream: trio.SocketStream) -> None:
    conn = DirectStream(detach(stream))
    buffer = b""
    try:
        while data := await _receive(conn):
            buffer += data
            while (end := _message_end(buffer)) >= 0:
                buffer = buffer[end:]
                await conn.send_all(ANSWER)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await conn.aclose()


async def _client(address: tuple[str, int], message: bytes, count: int) -> None:
    conn = DirectStream(socket.create_connection(address))
    try:
        for _ in range(count):
            await conn.send_all(message)
            buffer = b""
            while _message_end(buffer) < 0:
                data = await _receive(conn)
                if not data:
                    raise RuntimeError("connection closed before the answer")
                buffer += data
            if not buffer.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {buffer[:200]!r}")
    finally:
        await conn.aclose()


async def _cpu_per_request(address, message: bytes, clients: int, count: int) -> float:
    started = time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(_client, address, message, count)
    return (time.process_time() - started) / (clients * count) * 1e6


async def measure(mcp: bool, clients: int, count: int, runs: int) -> tuple[float, list[float]]:
    root = Path(tempfile.mkdtemp(prefix="trustmesh-inproc-"))
    try:
        pki = make_pki(root)
        home = root / "home"
        if mcp:
            apply_mcp_policy(home)
        client_id, server_id = (MCP_CLIENT_ID, MCP_SERVER_ID) if mcp else (CLIENT_ID, SERVER_ID)
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            app_port = listeners[0].socket.getsockname()[1]
            await nursery.start(trio.serve_listeners, _app, listeners)

            def options(app_id: str, **more) -> SidecarOptions:
                return SidecarOptions(
                    app_id, home, http_port=0, svid_dir=pki.svid_dirs[app_id],
                    handle_signals=False, **more,
                )  # fmt: skip

            await nursery.start(run_sidecar, options(server_id, app_port=app_port))
            client = await nursery.start(run_sidecar, options(client_id))
            app = ("127.0.0.1", app_port)
            direct = request(b"127.0.0.1:%d" % app_port, b"/mcp")
            target = b"/v1.0/invoke/%s/method/mcp" % server_id.encode()
            via = request(b"127.0.0.1:%d" % client.http_address[1], target)
            await _cpu_per_request(client.http_address, via, clients, count)  # warm-up
            pair, baseline = [], []
            for _ in range(runs):
                baseline.append(await _cpu_per_request(app, direct, clients, count))
                pair.append(await _cpu_per_request(client.http_address, via, clients, count))
            nursery.cancel_scope.cancel()
        base = min(baseline)
        return base, [p - base for p in pair]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inproc", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mcp", action="store_true", help="the MCP pair (policy on)")
    parser.add_argument("-c", "--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("-n", "--requests", type=int, default=300, help="requests per client")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    base, pair = trio.run(measure, args.mcp, args.clients, args.requests, args.runs)
    runs = " ".join(f"{p:.0f}" for p in pair)
    print(
        f"{'trustmesh+mcp' if args.mcp else 'trustmesh'} c={args.clients}: both sidecars "
        f"{min(pair):.0f} µs CPU per request (lowest of runs: {runs}; client+app alone {base:.0f})"
    )


if __name__ == "__main__":
    main()
