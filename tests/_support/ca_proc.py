"""A real ``trustmesh ca serve`` process for integration tests, and a raw HTTPS client to attack it.

The server is started on port 0 and awaited by its ``listening on https://…`` line (with a
deadline, never a sleep). Its structlog lines go to a file so tests can read the audit of what
was issued. The raw client speaks TLS and HTTP/1.1 by hand so tests can send what
:mod:`ca.client` never would.
"""

from __future__ import annotations

import contextlib
import json
import select
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

TRUSTMESH = str(Path(sys.executable).parent / "trustmesh")
READY_TIMEOUT = 20.0


def ca_command(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``trustmesh ca ARGS --home HOME`` as a user runs it: exit code, stdout and stderr."""
    return subprocess.run(
        [TRUSTMESH, "ca", *args, "--home", str(home)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip


def join_sidecar(mesh, ca_url: str, app_id: str, app_port: int | None = None):
    """A sidecar of ``mesh`` enrolled with the CA at ``ca_url`` by a fresh join token."""
    token = ca_command(mesh.home, "token", "--app-id", app_id)
    assert token.returncode == 0, token.stderr
    return mesh.procs.sidecar(
        app_id,
        mesh.home,
        app_port=app_port,
        extra=["--ca-url", ca_url],
        env={"TRUSTMESH_JOIN_TOKEN": token.stdout.strip()},
    )


def trusted_roots(home: Path) -> list:
    """The roots of ``<home>/ca/bundle.pem``, in order."""
    from ca.home import ca_layout
    from ca.store import load_bundle

    return list(load_bundle(ca_layout(home)).authorities)


@dataclass
class CAProcess:
    url: str
    home: Path
    log_path: Path
    popen: subprocess.Popen

    def log_events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextlib.contextmanager
def running_ca(home: Path, log_path: Path, *extra: str) -> Iterator[CAProcess]:
    argv = [TRUSTMESH, "ca", "serve", "--home", str(home), "--listen", "127.0.0.1:0", *extra]
    with log_path.open("wb") as log_file:
        popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log_file)
    try:
        url = _await_ready_line(popen, log_path)
        yield CAProcess(url, home, log_path, popen)
    finally:
        popen.terminate()
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()


def _await_ready_line(popen: subprocess.Popen, log_path: Path) -> str:
    assert popen.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([popen.stdout], [], [], deadline - time.monotonic())
        if not readable:
            break
        line = popen.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"ca serve exited early:\n{log_path.read_text()}")
        if line.startswith("listening on "):
            return line.removeprefix("listening on ").strip()
    raise RuntimeError(f"ca serve did not become ready:\n{log_path.read_text()}")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


async def open_tls(url: str, ctx: ssl.SSLContext) -> trio.SSLStream:
    host, port = host_port(url)
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), ctx, server_hostname=None)
    await stream.do_handshake()
    return stream


async def raw_request(
    url: str,
    ctx: ssl.SSLContext,
    method: str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> RawResponse:
    """One request written by hand; the response read until the server closes."""
    stream = await open_tls(url, ctx)
    try:
        head = f"{method} {path} HTTP/1.1\r\nhost: ca\r\n"
        for name, value in headers or []:
            head += f"{name}: {value}\r\n"
        if body or method == "POST":
            head += f"content-length: {len(body)}\r\n"
        await stream.send_all(head.encode() + b"\r\n" + body)
        return await read_response(stream)
    finally:
        await trio.aclose_forcefully(stream)


async def read_response(stream: trio.SSLStream) -> RawResponse:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "ca")]))
    conn.send(h11.EndOfMessage())  # put h11 in the state of having sent a request
    status, headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        else:
            return RawResponse(status, headers, bytes(body))
