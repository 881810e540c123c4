"""A caller that asks for a large answer and never reads it cannot hold a sidecar's connection.

Reads were bounded (head, per-read, body and keep-alive deadlines), writes were not: a caller
that requested a large response and stopped reading left the sidecar waiting for ever to write
it, holding the connection, its share of the peer's connection budget and the upstream exchange
behind it. Now a write that waits is bounded like a read (``read_timeout``): the sidecar closes
the connection once the caller took none of its bytes for that long.

Both doors, through real sidecars: mTLS straight into the app's sidecar (inbound), and plaintext
into the caller's own sidecar (outbound, then mTLS to the app's). The caller's receive buffer is
kept small so that a stall is a stall; after sitting on the answer well past the timeout, it finds
the connection closed before the body ended. The twin reads the same answer as it arrives and
gets every byte.

The other direction too: an app that stops reading the request body it is sent held the
caller's connection and exchange as long as it liked. The sidecar's writes to the app (and to a
peer sidecar) are bounded by the same timeout, and the caller gets a 5xx instead of waiting.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests._support.relay_mesh import start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

STALL_LIMIT = ["--limit", "read_timeout=1"]
# Far more than the sidecar's socket send buffer (tcp_wmem's maximum is 4 MiB by default) and
# the caller's small receive buffer hold: the sidecar must wait to write the rest.
SIZE = 16 << 20


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("write-stall"), mesh_ca)
    relay = start_relay_mesh(mesh, extra=STALL_LIMIT)
    client = mesh.sidecar("client", extra=STALL_LIMIT)
    yield relay, client
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _ask_for_big_answer(relay, client, door: str):
    relay_mesh, caller = relay, client
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    plain.settimeout(20)
    if door == "inbound":
        plain.connect(relay_mesh.server.address("inbound"))
        sock = relay_mesh.client_tls("client").wrap_socket(plain)
        prefix = ""
    else:
        plain.connect(caller.address("http"))
        sock = plain
        prefix = "/v1.0/invoke/server/method"
    sock.sendall(f"GET {prefix}/big?size={SIZE} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
    return sock


def _read_until_closed(sock) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except (ConnectionResetError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if data.endswith(b"x") and len(data) >= SIZE and b"\r\n\r\n" in data:
            _, _, body = bytes(data).partition(b"\r\n\r\n")
            if len(body) == SIZE:
                break  # the whole answer: the connection is kept alive, nothing more comes
    return bytes(data)


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_a_caller_that_never_reads_a_large_answer_is_cut_off(relay, door):
    relay_mesh, client = relay
    sock = _ask_for_big_answer(relay_mesh, client, door)
    with sock:
        time.sleep(4)  # the attack: sit on the answer, well past the 1 s timeout (and a sweep)
        data = _read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    received = len(body)
    assert received < SIZE, "the sidecar waited for the stalled caller instead of closing"


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_a_caller_that_reads_a_large_answer_gets_all_of_it(relay, door):
    relay_mesh, client = relay
    sock = _ask_for_big_answer(relay_mesh, client, door)
    with sock:
        data = _read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert len(body) == SIZE
    assert body.count(b"x") == SIZE


# -- the other direction: an app that stops reading the request body it is sent ------------------

BODY_SIZE = 16 << 20  # far more than the socket buffers between the sidecar and the app hold


@pytest.fixture(scope="module")
def relay_with_default_limits(tmp_path_factory, mesh_ca):
    """The twin's mesh: the default 30 s bound. Under the attack's 1 s bound, any pause of a
    second on a loaded machine (the sender thread, the app) would cut a legitimate upload."""
    mesh = Mesh(tmp_path_factory.mktemp("write-stall-twin"), mesh_ca)
    relay = start_relay_mesh(mesh)
    client = mesh.sidecar("client")
    yield relay, client
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _post_big_body(relay, client, door: str, path: str) -> tuple[bytes, bool]:
    """POST a large body to ``path`` and read what comes back: (the bytes, whether the caller
    was held: its send, or its wait for the answer, ran out of time). The answer is read once
    the body is sent, or once the sidecar stopped taking it (it answers and closes when its own
    write to the app waits): one SSL object must not be written and read by two threads at
    once (OpenSSL does not allow it, and a TLS 1.3 ticket read mid-write broke the twin)."""
    sock = _connect(relay, client, door)
    prefix = "" if door == "inbound" else "/v1.0/invoke/server/method"
    head = f"POST {prefix}{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {BODY_SIZE}\r\n\r\n"
    data, timed_out = bytearray(), False
    with sock:
        try:
            sock.sendall(head.encode())
            for _ in range(BODY_SIZE >> 20):
                sock.sendall(b"y" * (1 << 20))
        except TimeoutError:
            return b"", True  # the sidecar took none of the body for 20 s: it held the caller
        except OSError:
            pass  # reset: the sidecar closed with the rest of our body unsent; its answer may be in
        try:
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            timed_out = True
        except OSError:
            pass  # reset: the sidecar closed with the rest of our body unread
    return bytes(data), timed_out


def _connect(relay, client, door: str):
    plain = socket.create_connection(
        relay.server.address("inbound") if door == "inbound" else client.address("http")
    )
    plain.settimeout(20)  # the app holds a stalled request for 60 s
    return relay.client_tls("client").wrap_socket(plain) if door == "inbound" else plain


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_an_app_that_stops_reading_a_request_body_does_not_hold_the_caller(relay, door):
    relay_mesh, client = relay
    data, timed_out = _post_big_body(relay_mesh, client, door, "/stall")
    assert not timed_out, "the sidecar waited on the stalled app instead of giving up"
    assert data == b"" or data.startswith(b"HTTP/1.1 5"), data[
        :600
    ]  # 502 from the app's sidecar, or 503 when the calling one lost it


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_twin_an_app_that_reads_a_large_request_body_answers_it(relay_with_default_limits, door):
    relay_mesh, client = relay_with_default_limits
    data, timed_out = _post_big_body(relay_mesh, client, door, "/echo?msg=big")
    assert not timed_out
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert relay_mesh.log.saw("big")
