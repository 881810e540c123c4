"""A CA dropped while a request's body is still arriving also ends the stream that answers it.

A dropped CA cuts every exchange the proxies list as under way (``retire_streams``): a stream
stops, one whose head is awaited never starts. But an exchange was listed only once its request
had gone to the app, and a body held whole first (one the inbound judge reads to judge it, a
small one the outbound door reads to send in one write) arrives before that, for as long as its
sender trickles it (up to the body deadline). A CA dropped meanwhile cut nothing, and the app's
SSE answer then streamed to (or from) a peer of that CA for as long as the app kept it open.

The attack: ``POST /sse-gated`` with a 4-byte body of which 2 bytes are sent, the CA dropped,
then the rest. Inbound (the caller from the dropped CA) and outbound (the peer from it): the
stream must not start (403). Twins: a bundle that only adds a CA lets the same stream flow.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

import httpx
import pytest

from identity import TrustBundle, save_svid_dir
from tests._support.gated_stream import INVOKE_GATED, trickle_upload
from tests._support.pki import issue, make_ca
from tests.security.test_trust_bundle_narrowed import _caller_of_a_second_ca, _reload

pytestmark = pytest.mark.e2e

HALF = b"ab"  # of a 4-byte body: the other half comes after the bundle changed


def _post_stream(
    sock: socket.socket, target: bytes, host: bytes, change_bundle, app
) -> tuple[bytes, int]:
    """Send the head and half the body, change the bundle, send the rest, let the app send its
    second event. Returns what the sender receives until the stream ends or the sidecar closes,
    and how many requests reached the app meanwhile (the /release that frees it aside)."""
    before = _count(app)
    sock.sendall(
        b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: 4\r\n\r\n%s" % (target, host, HALF)
    )
    change_bundle()
    sock.sendall(b"cd")
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data, _count(app) - before
            data += chunk
        if not data.startswith(b"HTTP/1.1 200 "):  # refused: the error's JSON, then done
            while not data.endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data, _count(app) - before
        while b"data: first" not in data:
            data += sock.recv(65536)
        arrived = _count(app) - before
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        while not data.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, ssl.SSLError):
        pass
    return data, arrived


@pytest.fixture
def inbound(mesh, tmp_path):
    """A caller from a second CA on a kept connection to the server; yields a function that
    posts to the app's gated stream, changing the server's bundle while the body arrives."""
    app, kept, reload = _caller_of_a_second_ca(mesh, tmp_path)
    kept.sock.settimeout(15)
    try:
        yield lambda drop_second: _post_stream(
            kept.sock, b"/sse-gated", b"server", lambda: reload(drop_second), app
        )
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        kept.close()


def test_a_stream_to_a_caller_whose_ca_was_dropped_while_its_body_arrived_never_starts(inbound):
    data, arrived = inbound(drop_second=True)
    assert data.startswith(b"HTTP/1.1 403 ") and b"data: first" not in data, data
    assert b"ERR_PEER_SVID_EXPIRED" in data, data
    assert arrived == 0  # the request never reached the app


def test_twin_a_stream_whose_body_arrived_while_a_ca_was_only_added_flows(inbound):
    data, arrived = inbound(drop_second=False)
    assert data.startswith(b"HTTP/1.1 200 ") and b"data: second" in data, data
    assert arrived == 1


def _outbound_world(mesh, tmp_path):
    """A server whose SVID comes from a second CA, a caller sidecar trusting both, and the
    app behind the caller (a socket to the caller's outbound port). Returns (app, sock,
    change_bundle): ``change_bundle(drop_second)`` installs in the caller a bundle without the
    second CA, or one that only adds a third."""
    second = make_ca("public")
    both = TrustBundle.from_pem(mesh.ca.bundle.to_pem() + second.bundle.to_pem())
    server_dir, caller_dir = tmp_path / "server-svid", tmp_path / "caller-svid"
    save_svid_dir(server_dir, issue(second, "server"), both)
    caller_svid = issue(mesh.ca, "caller")
    save_svid_dir(caller_dir, caller_svid, both)
    app = mesh.procs.app()
    mesh.procs.sidecar("server", mesh.home, svid_dir=server_dir, app_port=app.ready["port"])
    caller = mesh.procs.sidecar("caller", mesh.home, svid_dir=caller_dir)
    third = make_ca("public")
    sock = socket.create_connection(caller.address("http"), timeout=15)

    def change_bundle(drop_second: bool) -> None:
        bundle = (
            mesh.ca.bundle
            if drop_second
            else TrustBundle.from_pem(both.to_pem() + third.bundle.to_pem())
        )
        _reload(caller, caller_dir, caller_svid, bundle)

    return app, sock, change_bundle


@pytest.fixture
def outbound(mesh, tmp_path):
    """Yields a function that posts to the server app's gated stream through the caller
    sidecar, changing the caller's bundle while the body arrives."""
    app, sock, change_bundle = _outbound_world(mesh, tmp_path)
    try:
        yield lambda drop_second: _post_stream(
            sock, INVOKE_GATED, b"127.0.0.1", lambda: change_bundle(drop_second), app
        )
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        sock.close()


def test_a_stream_from_a_peer_whose_ca_was_dropped_while_the_body_arrived_never_starts(outbound):
    data, arrived = outbound(drop_second=True)
    assert data.startswith(b"HTTP/1.1 403 ") and b"data: first" not in data, data
    assert arrived == 0  # the request never left for the peer


def test_twin_a_stream_from_a_peer_whose_body_arrived_while_a_ca_was_only_added_flows(outbound):
    data, arrived = outbound(drop_second=False)
    assert data.startswith(b"HTTP/1.1 200 ") and b"data: second" in data, data
    assert arrived == 1


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


# -- the outbound door: an app uploading through its sidecar to a peer whose CA is dropped -----


def _sunk(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/sunk").json()["size"]


@pytest.fixture
def uploading_out(mesh, tmp_path):
    """Yields a function that trickles a chunked body to the server app's /sink through the
    caller sidecar, changes the caller's bundle once the server app has read part of it, and
    returns (the status the uploading app got, bytes it sent, bytes the server app read)."""
    app, sock, change_bundle = _outbound_world(mesh, tmp_path)

    def upload(drop_second: bool) -> tuple[int, int, int]:
        outcome: list[tuple[int, int]] = []
        target = b"/v1.0/invoke/server/method/sink"
        uploader = threading.Thread(
            target=lambda: outcome.append(trickle_upload(sock, target, seconds=4)), daemon=True
        )
        uploader.start()
        deadline = time.monotonic() + 10
        while _sunk(app) == 0:  # under way: the server app has read its first chunk
            assert time.monotonic() < deadline, "the upload never reached the server app"
            time.sleep(0.05)
        change_bundle(drop_second)
        uploader.join(30)
        (status, sent), *_ = outcome
        return status, sent, _sunk(app)

    try:
        yield upload
    finally:
        sock.close()


def test_an_upload_to_a_peer_whose_ca_the_caller_drops_is_cut(uploading_out):
    status, sent, sunk = uploading_out(drop_second=True)
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert sunk < sent  # what came after the cut never reached the peer's app


def test_twin_an_upload_to_a_peer_goes_on_when_the_callers_bundle_only_adds_a_ca(uploading_out):
    status, sent, sunk = uploading_out(drop_second=False)
    assert status == 200 and sunk == sent
