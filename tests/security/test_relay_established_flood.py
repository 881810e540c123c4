"""Review of #10.7's neighbour: any mesh identity can crowd every caller out of a sidecar.

The handshake budget keeps peers *without* a certificate from taking an established caller's
place. A peer *with* one — any workload of the mesh, including one no ACL lets call anything —
finishes the handshake, never sends a request head, and holds an established slot for the whole
head timeout (10 s), reopening it as it likes. There is no per-identity or per-source share of
the established connections, so the listener's cap (1024 by default; 48 here, through
``--limit``, to keep the test light) is all it takes: every other caller is refused at accept.
Since the squatter never sends a request, no ACL decision and no audit record ever names it.

Twin: the same call with no squatters is served. (A caller whose pooled connection was
established before the flood keeps being served; one that needs a new connection is not.)
"""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from tests._support.relay_mesh import send_raw, start_relay_mesh
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

CAP = 48
LIMITS = ["--limit", f"max_connections={CAP}"]


@pytest.fixture(scope="module")
def relay(tmp_path_factory, mesh_ca):
    mesh = Mesh(tmp_path_factory.mktemp("squat"), mesh_ca)
    try:
        relay = start_relay_mesh(mesh, extra=LIMITS)
        client = mesh.sidecar("client")
        yield relay, client
    finally:
        killed = mesh.procs.stop_all()
        assert not killed, f"processes outlived SIGTERM: {killed}"


def call(client, msg: str) -> httpx.Response:
    url = f"{client.url()}/v1.0/invoke/server/method/echo"
    return httpx.get(url, params={"msg": msg}, timeout=15)


def test_twin_the_caller_is_served_without_squatters(relay):
    relay_mesh, client = relay
    msg = f"calm-{uuid.uuid4().hex[:8]}"
    answer = call(client, msg)
    assert answer.status_code == 200, answer.text
    assert relay_mesh.log.saw(msg)


def test_idle_connections_of_one_mesh_identity_do_not_lock_other_callers_out(relay):
    relay_mesh, _ = relay
    address = relay_mesh.server.address("inbound")
    tls = relay_mesh.client_tls("squatter")  # a real mesh certificate, never used to call
    squatters = []
    try:
        for _ in range(CAP + 2):
            sock = tls.wrap_socket(socket.create_connection(address, timeout=10))
            squatters.append(sock)  # handshake done; no request head follows
        # A caller arriving now (a new connection, as after its pool's keep-alive ended).
        msg = f"squatted-{uuid.uuid4().hex[:8]}"
        raw = f"GET /echo?msg={msg} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        try:
            status, _, body = send_raw(address, raw.encode(), relay_mesh.client_tls("client"))
        except (OSError, IndexError) as exc:  # cut at accept: no answer at all
            status, body = 0, repr(exc).encode()
        assert status == 200, body
        assert relay_mesh.log.saw(msg)
    finally:
        for sock in squatters:
            sock.close()


def test_connections_trickling_a_request_head_do_not_lock_other_callers_out(relay):
    """The neighbouring spelling: each squatter sends half a request head and stops. Nothing is
    in flight until a head is complete, so these count as idle and are cut for a newcomer."""
    relay_mesh, _ = relay
    address = relay_mesh.server.address("inbound")
    tls = relay_mesh.client_tls("squatter")
    squatters = []
    try:
        for _ in range(CAP + 2):
            sock = tls.wrap_socket(socket.create_connection(address, timeout=10))
            sock.sendall(b"GET /echo?msg=squat HTTP/1.1\r\nhost: 127.0.0.1\r\n")
            squatters.append(sock)
        msg = f"trickled-{uuid.uuid4().hex[:8]}"
        raw = f"GET /echo?msg={msg} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        try:
            status, _, body = send_raw(address, raw.encode(), relay_mesh.client_tls("client"))
        except (OSError, IndexError) as exc:  # cut at accept: no answer at all
            status, body = 0, repr(exc).encode()
        assert status == 200, body
        assert relay_mesh.log.saw(msg)
        assert not relay_mesh.log.saw("squat")
    finally:
        for sock in squatters:
            sock.close()
