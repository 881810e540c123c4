"""``python -m bench.floor``: what a minimal Python relay pair costs here, next to trustmesh.

A measuring stick for issue #11, not a product: two processes of ~100 lines (:func:`relay`)
doing the least a sidecar pair must do, on the same stack (CPython, trio, the ``ssl``
module), measured in the same run as the nginx pair and the trustmesh pair (no policy) with
the same load and app as ``make bench``::

    floor   wrk ─► relay(client) ═ mTLS (TLS 1.3, client cert, URI SAN) ═► relay(server) ─► app

Each relay is one trio task per connection driving a non-blocking ``ssl.SSLSocket`` (or plain
socket) with ``trio.lowlevel.wait_readable``/``wait_writable``; it reads a head up to the blank
line, splits its fields, frames the body by ``Content-Length`` only, drops hop-by-hop fields,
sets ``Host`` (and, on the server side, the caller's SPIFFE ID), and writes each message in one
send. It has no strict parser, no judge, no audit, no metrics, no deadlines, no pool, no limits:
whatever trustmesh costs beyond it is what those, and the layers around them, cost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import ssl
import sys
import tempfile
from pathlib import Path

HOP_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"content-length",
     b"host", b"proxy-connection"}
)  # fmt: skip
SERVER_SPIFFE_ID = "spiffe://public/ns/default/bench-server"


# --- the relay (one process per side) ------------------------------------------------------


def _context(server_side: bool, svid_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(svid_dir / "svid.pem", svid_dir / "svid.key")
    context.load_verify_locations(svid_dir / "bundle.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = False  # the SPIFFE ID is checked instead
    return context


def relay(role: str, listen_port: int, upstream_port: int, svid_dir: Path) -> None:
    import trio
    from trio.lowlevel import wait_readable, wait_writable

    async def receive(sock) -> bytes:
        while True:
            try:
                return sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                await wait_readable(sock)

    async def send(sock, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view) :]
            except (BlockingIOError, ssl.SSLWantWriteError):
                await wait_writable(sock)
            except ssl.SSLWantReadError:
                await wait_readable(sock)

    async def handshake(sock) -> None:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await wait_readable(sock)
            except ssl.SSLWantWriteError:
                await wait_writable(sock)

    def spiffe_id(sock) -> str:
        uris = [v for kind, v in sock.getpeercert().get("subjectAltName", ()) if kind == "URI"]
        if len(uris) != 1:
            raise ValueError("the peer's certificate does not hold exactly one URI SAN")
        return uris[0]

    async def read_message(sock, buffer: bytes):
        """((start line, fields, body), what follows), or (None, b"") at EOF."""
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            data = await receive(sock)
            if not data:
                return None, b""
            buffer += data
        lines = buffer[:end].split(b"\r\n")
        rest = buffer[end + 4 :]
        fields, length = [], 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.lower(), value.strip()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise ValueError("only Content-Length framing is relayed")
            fields.append((name, value))
        while len(rest) < length:
            data = await receive(sock)
            if not data:
                return None, b""
            rest += data
        return (lines[0], fields, rest[:length]), rest[length:]

    def serialize(start: bytes, fields, body: bytes, extra) -> bytes:
        lines = [start, *(n + b": " + v for n, v in fields if n not in HOP_FIELDS), *extra]
        lines.append(b"content-length: %d" % len(body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def serve(down, client_context, server_context) -> None:
        down = socket.socket(fileno=down.detach())
        down.setblocking(False)
        down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = [b"host: 127.0.0.1"]
        if role == "server":
            down = server_context.wrap_socket(down, server_side=True, do_handshake_on_connect=False)
            await handshake(down)
            extra.append(b"x-caller-spiffe-id: " + spiffe_id(down).encode())
        up = socket.socket()
        up.setblocking(False)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            up.connect(("127.0.0.1", upstream_port))
        except BlockingIOError:
            await wait_writable(up)
        if role == "client":
            up = client_context.wrap_socket(up, server_side=False, do_handshake_on_connect=False)
            await handshake(up)
            if spiffe_id(up) != SERVER_SPIFFE_ID:
                raise ValueError("the peer is not bench-server")
        down_buffer = up_buffer = b""
        try:
            while True:
                request, down_buffer = await read_message(down, down_buffer)
                if request is None:
                    return
                await send(up, serialize(*request, extra))
                response, up_buffer = await read_message(up, up_buffer)
                if response is None:
                    return
                await send(down, serialize(*response, ()))
        finally:
            down.close()
            up.close()

    async def connection(down, client_context, server_context) -> None:
        # A probe connection, a peer gone: this connection ends, the relay goes on.
        with contextlib.suppress(OSError, ValueError):
            await serve(down, client_context, server_context)

    async def main() -> None:
        client_context, server_context = _context(False, svid_dir), _context(True, svid_dir)
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", listen_port))
        listener.listen(512)
        async with trio.open_nursery() as nursery:
            while True:
                down, _ = await listener.accept()
                nursery.start_soon(connection, down, client_context, server_context)

    trio.run(main)


# --- the comparison --------------------------------------------------------------------------


def compare(seconds: float) -> None:
    from .deps import ensure_programs
    from .load import run_wrk, write_script
    from .procs import Processes, free_port
    from .topology import CLIENT_ID, SERVER_ID, Route, start_topology

    programs = ensure_programs()
    work = Path(tempfile.mkdtemp(prefix="trustmesh-floor-"))
    procs = Processes(work, Path.cwd())
    try:
        topology = start_topology(procs, programs["nginx"])
        app_port = int(topology.direct.url.rsplit(":", 1)[1].split("/")[0])
        svids = work / "svids"
        server_port, client_port = free_port(), free_port()
        server = procs.start(
            "floor-server", _relay_argv("server", server_port, app_port, svids / SERVER_ID)
        )
        procs.wait_port(server, server_port)
        client = procs.start(
            "floor-client", _relay_argv("client", client_port, server_port, svids / CLIENT_ID)
        )
        procs.wait_port(client, client_port)
        floor = Route("floor", f"http://127.0.0.1:{client_port}/mcp", (client, server))
        script = write_script(work)
        print(
            f"{'path':<14}{'c':>4}{'req/s':>10}{'p50 µs':>9}{'CPU µs/req':>12}"
            "  per proxy (user/sys)"
        )
        rows = {}
        for route in (topology.nginx, floor, topology.trustmesh):
            for concurrency in (32, 1):
                run_wrk(programs["wrk"], script, route.url, concurrency, 1.0)
                before = [_cpu_split(p) for p in route.proxies]
                result = run_wrk(programs["wrk"], script, route.url, concurrency, seconds)
                after = [_cpu_split(p) for p in route.proxies]
                parts = [
                    ((a[0] - b[0]) * 1e6 / result.requests, (a[1] - b[1]) * 1e6 / result.requests)
                    for a, b in zip(after, before, strict=True)
                ]
                cpu = sum(u + s for u, s in parts)
                rows[route.name, concurrency] = (result.rps, cpu)
                split = "  ".join(f"{u:.0f}/{s:.0f}" for u, s in parts)
                print(
                    f"{route.name:<14}{concurrency:>4}{result.rps:>10.0f}{result.p50_us:>9}"
                    f"{cpu:>12.0f}  {split}"
                )
        for name in ("floor", "trustmesh"):
            rps, cpu = rows[name, 32]
            print(
                f"{name} at c=32: {rps / rows['nginx pair', 32][0]:.2f}× the nginx pair's "
                f"throughput, {cpu / rows['nginx pair', 32][1]:.1f}× its CPU per request"
            )
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _cpu_split(proc) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its children (nginx: master and worker)."""
    from .procs import CLK_TCK, _stat

    user = system = 0
    for pid in proc.tree():
        try:
            fields = _stat(pid)
        except (OSError, IndexError):
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def _relay_argv(role: str, listen: int, upstream: int, svid_dir: Path) -> list[str]:
    return [sys.executable, "-m", "bench.floor", "relay", role, str(listen), str(upstream),
            str(svid_dir)]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("relay", help="run one side of the pair (started by the comparison)")
    one.add_argument("role", choices=("client", "server"))
    one.add_argument("listen_port", type=int)
    one.add_argument("upstream_port", type=int)
    one.add_argument("svid_dir", type=Path)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    args = parser.parse_args(argv)
    if args.command == "relay":
        relay(args.role, args.listen_port, args.upstream_port, args.svid_dir)
    else:
        compare(args.duration)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
