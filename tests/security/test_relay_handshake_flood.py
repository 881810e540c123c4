"""#10.7: idle sockets that never finish the mTLS handshake cannot lock authenticated callers out.

The app's sidecar runs with a small established-connection cap (32), so the old rule — pending
handshakes counted against that cap — would be locked out by 32 idle sockets. Here 300 idle TCP
connections without a certificate (loopback, bounded) are opened against its mTLS port; they
fall into the handshake budget (8 per source), which cuts its oldest to admit newcomers. An
authenticated caller that connects afterwards is served, a caller already established before the
flood keeps being served on its connection, and the app's own log holds both requests. The
flood itself is cut: all but the newest few sockets are closed by the sidecar.
"""

from __future__ import annotations

import select
import socket
import ssl
import time

import httpx
import pytest

from tests._support.relay_mesh import read_answer, start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

FLOOD = 300
PER_SOURCE = 8
LIMITS = [
    "--limit", "max_connections=32",
    "--limit", "max_handshakes=16",
    "--limit", f"max_handshakes_per_source={PER_SOURCE}",
    # Far longer than the test: what saves callers here is the budget, not the deadline.
    "--limit", "handshake_timeout=120",
]  # fmt: skip


@pytest.fixture(scope="module")
def flooded(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("flood"), mesh_ca)
    relay = start_relay_mesh(mesh, extra=LIMITS)
    client = mesh.sidecar("client")
    yield relay, client
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _get(sock, msg: str, close: bool = False) -> tuple[int, bytes]:
    extra = "connection: close\r\n" if close else ""
    sock.sendall(f"GET /echo?msg={msg} HTTP/1.1\r\nhost: 127.0.0.1\r\n{extra}\r\n".encode())
    if close:
        status, _, body = read_answer(sock)
        return status, body
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def _closed_by_peer(socks: list[socket.socket], deadline: float) -> int:
    """How many of ``socks`` the sidecar closed (EOF or reset) before ``deadline``."""
    open_ = list(socks)
    closed = 0
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(1)
            except OSError:
                data = b""
            if not data:
                closed += 1
                open_.remove(sock)
        if closed >= len(socks) - PER_SOURCE:
            break
    return closed


def test_unauthenticated_flood_does_not_lock_authenticated_callers_out(flooded):
    relay, client = flooded
    address = relay.server.address("inbound")
    tls = relay.client_tls("client")
    # A caller established before the flood (handshake done, keep-alive).
    early = tls.wrap_socket(socket.create_connection(address, timeout=10))
    assert _get(early, "before-flood") == (200, b'{"echo": "before-flood"}')
    squatters = []
    try:
        for _ in range(FLOOD):
            squatters.append(socket.create_connection(address, timeout=10))
        # A new authenticated caller through its own sidecar (a fresh mTLS handshake)...
        fresh = httpx.get(
            f"{client.url()}/v1.0/invoke/server/method/echo",
            params={"msg": "during-flood"},
            timeout=15,
        )
        assert fresh.status_code == 200, fresh.text
        assert fresh.json() == {"echo": "during-flood"}
        # ...and one with a raw socket, and the established caller, are all served.
        with tls.wrap_socket(socket.create_connection(address, timeout=10)) as raw:
            assert _get(raw, "raw-during-flood", close=True) == (
                200, b'{"echo": "raw-during-flood"}'
            )  # fmt: skip
        assert _get(early, "established-during-flood") == (
            200, b'{"echo": "established-during-flood"}'
        )  # fmt: skip
        # The flood was cut down to the per-source share of the handshake budget.
        closed = _closed_by_peer(squatters, time.monotonic() + 20)
        assert closed >= FLOOD - PER_SOURCE - 2, closed
    finally:
        early.close()
        for sock in squatters:
            sock.close()
    for msg in ("before-flood", "during-flood", "raw-during-flood", "established-during-flood"):
        assert relay.log.saw(msg), msg


def test_a_caller_without_a_certificate_is_still_refused(flooded):
    """The twin: the budget admits handshakes; it never lets one through without an SVID."""
    relay, _ = flooded
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname = False
    anonymous.verify_mode = ssl.CERT_NONE
    request = b"GET /echo?msg=anonymous HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(relay.server.address("inbound"), timeout=10) as plain:
        try:
            with anonymous.wrap_socket(plain) as sock:
                sock.sendall(request)
                answer = sock.recv(65536)
        except (ssl.SSLError, OSError):
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200")
    assert not relay.log.saw("anonymous")
