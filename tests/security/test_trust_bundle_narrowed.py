"""A CA removed from the trust bundle stops its peers on the connections they already hold.

TLS verifies a peer once, at the handshake. A sidecar whose bundle is narrowed (an operator
drops a compromised or retired CA) refuses that CA's certificates at every new handshake, but a
caller that connected before the change kept calling over its open keep-alive connection for as
long as it liked. Now a bundle that drops a CA retires every connection verified under the old
one: idle ones are closed at once, busy ones after their exchange; a caller that is still
trusted reconnects and is verified again.

A neighbouring spelling: an answer that streams (SSE), or a request body that does (an upload),
is one exchange that may last hours, so "after their exchange" let a caller from the dropped CA
go on receiving events, or sending its body. A stream in flight is now cut when the bundle drops
a CA; one in flight when a CA is only added goes on.

The app's own request counter proves what arrived.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time

import httpx
import pytest

from identity import TrustBundle, client_context, save_svid_dir
from tests._support.gated_stream import (
    INVOKE_GATED,
    open_gated_stream,
    post_echo,
    rest_of_gated_stream,
    trickle_upload,
)
from tests._support.pki import issue, make_ca

pytestmark = pytest.mark.e2e


class Kept:
    """One mTLS connection to the inbound port, kept alive across requests."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(socket.create_connection(address, timeout=10))

    def post(self) -> int:
        """The answer's status, or 0 if the sidecar closed (or reset) the connection."""
        return post_echo(self.sock)

    def close(self) -> None:
        self.sock.close()


def _fresh(address, context) -> int:
    kept = None
    try:
        kept = Kept(address, context)
        return kept.post()
    except (ConnectionError, ssl.SSLError):
        return 0  # refused at the handshake
    finally:
        if kept is not None:
            kept.close()


def _reload(server, directory, svid, bundle) -> None:
    """Write a new SVID directory and wait until the sidecar has installed it."""
    status_url = f"http://{server.ready['admin']}/v1/status"
    renewals = httpx.get(status_url).json()["svid"]["renewals"]
    save_svid_dir(directory, svid, bundle)
    deadline = time.monotonic() + 15
    while httpx.get(status_url).json()["svid"]["renewals"] <= renewals:
        assert time.monotonic() < deadline, "the sidecar never reloaded its SVID directory"
        time.sleep(0.05)


@pytest.fixture
def narrowed(mesh, tmp_path):
    """A server trusting two CAs, callers from each on kept connections, then the second CA
    dropped from the server's bundle; yields what the test inspects."""
    retired = make_ca("public")
    both = TrustBundle.from_pem(mesh.ca.bundle.to_pem() + retired.bundle.to_pem())
    server_svid = issue(mesh.ca, "server")
    directory = tmp_path / "server-svid"
    save_svid_dir(directory, server_svid, both)
    app = mesh.procs.app()
    server = mesh.procs.sidecar("server", mesh.home, svid_dir=directory, app_port=app.ready["port"])
    address = server.address("inbound")
    from_retired = client_context(issue(retired, "caller"), both)
    from_kept = client_context(issue(mesh.ca, "caller"), mesh.ca.bundle)
    connections = {"retired": Kept(address, from_retired), "kept": Kept(address, from_kept)}
    try:
        assert {name: c.post() for name, c in connections.items()} == {"retired": 200, "kept": 200}
        _reload(server, directory, server_svid, mesh.ca.bundle)  # the second CA is dropped
        yield app, address, connections, {"retired": from_retired, "kept": from_kept}
    finally:
        for connection in connections.values():
            connection.close()


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


def test_a_caller_from_a_dropped_ca_is_cut_off_on_its_open_connection(narrowed):
    app, address, connections, contexts = narrowed
    before = _count(app)
    assert connections["retired"].post() == 0  # its open connection was closed
    assert _fresh(address, contexts["retired"]) == 0  # and a new handshake is refused
    assert _count(app) == before


def test_twin_a_caller_from_a_kept_ca_reconnects_and_is_served(narrowed):
    app, address, _connections, contexts = narrowed
    before = _count(app)
    assert _fresh(address, contexts["kept"]) == 200
    assert _count(app) == before + 1


# -- a streamed answer in flight when the bundle changes ---------------------------------------


def _caller_of_a_second_ca(mesh, tmp_path):
    """A server trusting the mesh CA and a second one, and a caller from the second on a kept
    connection. Returns (app, kept, reload): ``reload(drop_second)`` installs in the server a
    bundle without the second CA, or one that only adds a third."""
    second = make_ca("public")
    both = TrustBundle.from_pem(mesh.ca.bundle.to_pem() + second.bundle.to_pem())
    server_svid = issue(mesh.ca, "server")
    directory = tmp_path / "server-svid"
    save_svid_dir(directory, server_svid, both)
    app = mesh.procs.app()
    server = mesh.procs.sidecar("server", mesh.home, svid_dir=directory, app_port=app.ready["port"])
    kept = Kept(server.address("inbound"), client_context(issue(second, "caller"), both))
    third = make_ca("public")

    def reload(drop_second: bool) -> None:
        bundle = (
            mesh.ca.bundle
            if drop_second
            else TrustBundle.from_pem(both.to_pem() + third.bundle.to_pem())
        )
        _reload(server, directory, server_svid, bundle)

    return app, kept, reload


@pytest.fixture
def streaming(mesh, tmp_path):
    """A server trusting one CA, a caller from a second CA holding an open SSE stream; yields
    a function that installs a new bundle and returns what else arrives on the stream once
    the app sends its next event."""
    app, kept, reload = _caller_of_a_second_ca(mesh, tmp_path)

    def change_bundle(drop_second: bool) -> tuple[bytes, bool]:
        open_gated_stream(kept.sock)  # the first event is out; the app holds the second back
        reload(drop_second)
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        return rest_of_gated_stream(kept.sock, timeout=15)

    try:
        yield change_bundle
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        kept.close()


def test_a_stream_to_a_caller_from_a_dropped_ca_is_cut(streaming):
    data, closed = streaming(drop_second=True)
    assert closed and b"data: second" not in data, data


def test_twin_a_stream_goes_on_when_the_bundle_only_adds_a_ca(streaming):
    data, closed = streaming(drop_second=False)
    assert b"data: second" in data and not closed, data


# -- an upload under way when the bundle changes ----------------------------------------------


def _sunk(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/sunk").json()["size"]


@pytest.fixture
def uploading(mesh, tmp_path):
    """A caller from a second CA trickling a chunked body to the app; yields a function that
    installs a new bundle once the app has read part of it, and returns (the caller's status,
    bytes it sent, bytes the app read)."""
    app, kept, reload = _caller_of_a_second_ca(mesh, tmp_path)

    def change_bundle(drop_second: bool) -> tuple[int, int, int]:
        outcome: list[tuple[int, int]] = []
        caller = threading.Thread(
            target=lambda: outcome.append(trickle_upload(kept.sock, seconds=4)), daemon=True
        )
        caller.start()
        deadline = time.monotonic() + 10
        while _sunk(app) == 0:  # the upload is under way: the app has read its first chunk
            assert time.monotonic() < deadline, "the upload never reached the app"
            time.sleep(0.05)
        reload(drop_second)
        in_flight = caller.is_alive()  # cut or not, the new bundle came while the body flowed
        caller.join(30)
        (status, sent), *_ = outcome
        assert in_flight or status != 200, "the upload ended before the new bundle applied"
        return status, sent, _sunk(app)

    try:
        yield change_bundle
    finally:
        kept.close()


def test_an_upload_from_a_caller_of_a_dropped_ca_is_cut(uploading):
    status, sent, sunk = uploading(drop_second=True)
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert sunk < sent  # what came after the cut never reached the app


def test_twin_an_upload_goes_on_when_the_bundle_only_adds_a_ca(uploading):
    status, sent, sunk = uploading(drop_second=False)
    assert status == 200 and sunk == sent


# -- the outbound door: an answer streaming from a peer whose CA the caller's bundle drops ------


def _outbound_stream(mesh, tmp_path, server_ttl=dt.timedelta(hours=1)):
    """A server whose SVID comes from a second CA and a caller sidecar trusting both; the app
    behind the caller opens the server app's gated stream and has read its first event.
    Returns (app, caller, caller_dir, caller_svid, both, sock)."""
    second = make_ca("public")
    both = TrustBundle.from_pem(mesh.ca.bundle.to_pem() + second.bundle.to_pem())
    server_dir, caller_dir = tmp_path / "server-svid", tmp_path / "caller-svid"
    save_svid_dir(server_dir, issue(second, "server", ttl=server_ttl), both)
    caller_svid = issue(mesh.ca, "caller")
    save_svid_dir(caller_dir, caller_svid, both)
    app = mesh.procs.app()
    mesh.procs.sidecar("server", mesh.home, svid_dir=server_dir, app_port=app.ready["port"])
    caller = mesh.procs.sidecar("caller", mesh.home, svid_dir=caller_dir)
    sock = socket.create_connection(caller.address("http"), timeout=15)
    open_gated_stream(sock, INVOKE_GATED)  # the first event is out; the second is held back
    return app, caller, caller_dir, caller_svid, both, sock


@pytest.fixture
def streaming_out(mesh, tmp_path):
    """An answer streaming from a peer to the app behind a caller sidecar; yields a function
    that installs a new bundle in the caller and returns what else the app receives once the
    server sends its next event."""
    app, caller, caller_dir, caller_svid, both, sock = _outbound_stream(mesh, tmp_path)
    third = make_ca("public")

    def change_bundle(drop_second: bool) -> tuple[bytes, bool]:
        bundle = (
            mesh.ca.bundle
            if drop_second
            else TrustBundle.from_pem(both.to_pem() + third.bundle.to_pem())
        )
        _reload(caller, caller_dir, caller_svid, bundle)
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        return rest_of_gated_stream(sock, timeout=15)

    try:
        yield change_bundle
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        sock.close()


def test_a_stream_from_a_peer_of_a_dropped_ca_is_cut_at_the_caller(streaming_out):
    data, closed = streaming_out(drop_second=True)
    assert closed and b"data: second" not in data, data


def test_twin_a_stream_from_a_peer_goes_on_when_the_bundle_only_adds_a_ca(streaming_out):
    data, closed = streaming_out(drop_second=False)
    assert b"data: second" in data and not closed, data


def test_a_stream_from_a_peer_is_cut_at_the_peers_svid_expiry(mesh, tmp_path):
    ttl = dt.timedelta(seconds=3)
    expiry = time.monotonic() + ttl.total_seconds()
    app, _caller, _dir, _svid, _both, sock = _outbound_stream(mesh, tmp_path, server_ttl=ttl)
    try:
        # The caller sidecar cuts the stream at the server's notAfter (its deadline sweep runs
        # at least once a second); without the cut, nothing would arrive or close until the
        # app is released. (The twin: the stream above, from a peer with an hour left.)
        data, closed = rest_of_gated_stream(sock, timeout=(expiry - time.monotonic()) + 5)
        assert closed and b"data: second" not in data, data
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        sock.close()


# -- a stream whose head the app had not sent yet when the bundle changed ----------------------


@pytest.fixture
def held(mesh, tmp_path):
    """A caller from a second CA whose request for a stream is with the app, the answer's head
    not sent yet; yields a function that installs a new bundle, lets the app answer, and
    returns what the caller receives (until the stream ends or the sidecar closes)."""
    app, kept, reload = _caller_of_a_second_ca(mesh, tmp_path)
    kept.sock.settimeout(15)

    def change_bundle(drop_second: bool) -> bytes:
        kept.sock.sendall(b"GET /sse-held HTTP/1.1\r\nhost: server\r\n\r\n")
        deadline = time.monotonic() + 10
        while _count(app) < 1:  # the app holds the request, its answer not begun
            assert time.monotonic() < deadline, "the request never reached the app"
            time.sleep(0.05)
        reload(drop_second)
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        data = b""
        try:
            while not data.endswith(b"0\r\n\r\n"):
                chunk = kept.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionError, ssl.SSLError):
            pass
        return data

    try:
        yield change_bundle
    finally:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
        kept.close()


def test_a_stream_begun_after_the_bundle_dropped_the_callers_ca_never_starts(held):
    data = held(drop_second=True)
    assert b"data: held" not in data and data.startswith(b"HTTP/1.1 403 "), data


def test_twin_a_stream_begun_after_the_bundle_only_added_a_ca_is_delivered(held):
    data = held(drop_second=False)
    assert data.startswith(b"HTTP/1.1 200 ") and b"data: held" in data, data
