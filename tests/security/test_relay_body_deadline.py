"""#10.3 (I/O half): a request body trickled past the overall deadline is refused with 408.

The app's sidecar runs with a 1.5 s body deadline and a generous per-read timeout; the caller
sends a small body one byte every 0.25 s over real mTLS (and through the caller's own outbound
port), so no single read is slow. The sidecar answers 408 JSON once the deadline passes and the
app's log shows the request never arrived; the twin, trickled fast enough, is forwarded.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests._support.relay_mesh import read_answer, start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

DEADLINE = ["--limit", "body_timeout=1.5", "--limit", "read_timeout=20"]


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("body-deadline"), mesh_ca)
    relay = start_relay_mesh(mesh, extra=DEADLINE)
    client = mesh.sidecar("client", extra=DEADLINE)
    yield relay, client
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _trickle(relay, client, door: str, body: bytes, every: float):
    marker = f"{door}-{uuid.uuid4().hex[:8]}"
    if door == "inbound":
        plain = socket.create_connection(relay.server.address("inbound"), timeout=20)
        sock = relay.client_tls("client").wrap_socket(plain)
        prefix = ""
    else:
        sock = socket.create_connection(client.address("http"), timeout=20)
        prefix = "/v1.0/invoke/server/method"
    with sock:
        sock.sendall(
            f"POST {prefix}/echo?msg={marker} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        )
        try:
            for byte in body:
                time.sleep(every)
                sock.sendall(bytes([byte]))
        except OSError:
            pass  # refused mid-body: the answer is already waiting
        return marker, read_answer(sock)


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_a_body_trickled_past_the_deadline_gets_408_and_never_arrives(relay, door):
    relay_mesh, client = relay
    marker, (status, headers, body) = _trickle(relay_mesh, client, door, b"x" * 12, 0.25)
    assert status == 408, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["errorCode"] == "ERR_BODY_TIMEOUT"
    assert "did not arrive within 1.5 s" in error["message"]
    assert not relay_mesh.log.saw(marker)


@pytest.mark.parametrize("door", ["inbound", "outbound"])
def test_a_body_trickled_within_the_deadline_is_forwarded(relay, door):
    relay_mesh, client = relay
    marker, (status, _, body) = _trickle(relay_mesh, client, door, b"x" * 3, 0.1)
    assert status == 200, body
    assert json.loads(body) == {"echo": marker}
    assert relay_mesh.log.saw(marker)
