"""Review of identity mapping and SVID lifetime: the identity judged is the handshake's, forever.

The inbound sidecar reads the caller's App identity off its certificate once, at the TLS
handshake, and every request on that keep-alive connection is judged as that identity. Two
spellings of the same hole:

* **A binding applied while the connection is open.** A pod under a ServiceAccount *named*
  ``mcp-client`` maps to App ID mcp-client by default. It opens a connection, then the operator
  binds mcp-client to ``sa/agent-runner`` (exactly the case ``test_k8s_identity_map_attacks``
  shows refused on a *new* connection). On its old connection the squatter is still mcp-client.
* **An SVID that expires while the connection is open.** Its holder keeps calling, as long as it
  never lets the connection idle out.

* **An SVID that expires while a request body is on its way.** The head is judged while the leaf
  is valid; the body (held back until the server asks for it) completes after the expiry.

* **A streamed answer that outlives the caller's SVID.** An SSE stream opened while the leaf was
  valid kept delivering events for as long as the app sent them; it is now cut at the expiry.
  One whose head the app sends only after the expiry, all at once, never starts.

* **An upload that outlives the caller's SVID, or a binding.** A chunked request body streamed
  to the app kept flowing after the leaf expired, or after a binding took the caller's App ID,
  for as long as the caller kept sending; it is now cut then, as a streamed answer is.

* **A streamed answer that outlives a binding.** A squatter's SSE stream, opened before the
  binding took its App ID, kept delivering; it is now cut when the map changes. A stream whose
  caller the new map leaves alone goes on.
  At the outbound door likewise: a stream from a peer whose App ID a binding gave to another
  SPIFFE ID is cut at the caller's sidecar.

The app's own request counter proves what arrived. Twins: a new connection with the same
certificate is refused at once (the binding is in force; the expired SVID fails its handshake).
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time

import httpx
import pytest

from identity import AppIdentity, SpiffeId, save_svid_dir
from tests._support.gated_stream import (
    INVOKE_GATED,
    open_gated_stream,
    post_echo,
    read_status,
    rest_of_gated_stream,
    trickle_upload,
)
from tests._support.pki import utcnow
from tests.security.test_k8s_identity_map_attacks import ALLOW_ONLY_CLIENT, BINDING, World

pytestmark = pytest.mark.e2e

SHORT_TTL = dt.timedelta(seconds=3)


@pytest.fixture
def world(tmp_path, mesh_ca):
    world = World(tmp_path, mesh_ca)
    world.apply("config.yaml", ALLOW_ONLY_CLIENT)
    yield world
    killed = world.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


def _svid(world, name: str, path: tuple[str, ...], ttl: dt.timedelta | None = None):
    sid = SpiffeId.from_parts("public", *path)
    directory = world.root / "svids" / name
    identity = AppIdentity("public", "default", path[-1], source=sid)
    kw = {"ttl": ttl} if ttl is not None else {}
    save_svid_dir(directory, world.ca.issue(identity, now=utcnow(), **kw), world.ca.bundle)
    return directory


def _context(svid_dir) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(svid_dir / "bundle.pem"))
    context.check_hostname = False
    context.load_cert_chain(svid_dir / "svid.pem", svid_dir / "svid.key")
    return context


class KeptConnection:
    """One mTLS connection kept alive across requests (what a persistent client does)."""

    def __init__(self, svid_dir, inbound: str) -> None:
        host, port = inbound.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        self.sock = _context(svid_dir).wrap_socket(raw)

    def post(self) -> int:
        return post_echo(self.sock)

    def post_held_back(self, until: float | None = None) -> int:
        """A POST whose one-byte body is sent only after the sidecar judged its head (its
        ``100 Continue``) and, if ``until`` is given, once ``time.monotonic()`` has passed it."""
        self.sock.sendall(
            b"POST /echo HTTP/1.1\r\nhost: server\r\ncontent-length: 1\r\n"
            b"expect: 100-continue\r\n\r\n"
        )
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = self.sock.recv(1)  # byte by byte: nothing of the final answer is consumed
            assert chunk, "the sidecar closed the connection instead of asking for the body"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        if until is not None:
            time.sleep(max(0.0, until - time.monotonic()))
        self.sock.sendall(b"x")
        return read_status(self.sock)

    def open_stream(self) -> bytes:
        return open_gated_stream(self.sock)

    def rest_of_stream(self, timeout: float) -> tuple[bytes, bool]:
        return rest_of_gated_stream(self.sock, timeout)

    def close(self) -> None:
        self.sock.close()


def _fresh_status(svid_dir, inbound: str) -> int:
    try:
        with httpx.Client(verify=_context(svid_dir)) as client:
            reply = client.post(f"https://{inbound}/echo", content=b"x", headers={"host": "server"})
            return reply.status_code
    except (httpx.TransportError, ssl.SSLError):
        return 0  # refused at the handshake


def _server(world):
    app = world.procs.app()
    server = world.sidecar(
        "server", ("ns", "default", "sa", "server"), app_port=app.ready["port"],
        extra=["--config", "only-client"],
    )  # fmt: skip
    return app, server.ready["inbound"]


def test_a_binding_applied_while_a_squatter_is_connected_stops_it_on_that_connection(world):
    app, inbound = _server(world)
    squatter = _svid(world, "squatter", ("ns", "default", "sa", "mcp-client"))
    kept = KeptConnection(squatter, inbound)
    try:
        assert kept.post() == 200  # before the binding, sa/mcp-client *is* mcp-client
        world.apply("binding.yaml", BINDING)
        deadline = time.monotonic() + 20
        while _fresh_status(squatter, inbound) != 403:  # twin: the binding is in force
            assert time.monotonic() < deadline, "the binding never took effect"
            time.sleep(0.2)
        before = _count(app)
        status = kept.post()
        assert (status, _count(app)) == (403, before)
        assert kept.post() == 0  # and the sidecar closed that connection
    finally:
        kept.close()


def test_an_svid_that_expires_while_connected_stops_serving_on_that_connection(world):
    app, inbound = _server(world)
    client = _svid(world, "short", ("ns", "default", "mcp-client"), ttl=SHORT_TTL)
    kept = KeptConnection(client, inbound)
    try:
        assert kept.post() == 200
        expiry = time.monotonic() + SHORT_TTL.total_seconds() + 1
        while time.monotonic() < expiry:  # keep the connection busy, well inside keep-alive
            time.sleep(0.5)
        assert _fresh_status(client, inbound) == 0  # twin: a new handshake is refused
        before = _count(app)
        status = kept.post()
        assert (status in (0, 403), _count(app)) == (True, before), status  # refused or cut
    finally:
        kept.close()


# -- a body held back across the expiry: judged again, by the leaf as it stands, when it is in ---


def test_twin_a_body_sent_after_the_head_was_judged_arrives_while_the_svid_is_valid(world):
    app, inbound = _server(world)
    kept = KeptConnection(_svid(world, "client", ("ns", "default", "mcp-client")), inbound)
    try:
        before = _count(app)
        assert (kept.post_held_back(), _count(app)) == (200, before + 1)
    finally:
        kept.close()


def test_a_body_completed_after_the_callers_svid_expired_never_reaches_the_app(world):
    app, inbound = _server(world)
    ttl = dt.timedelta(seconds=2)
    client = _svid(world, "short", ("ns", "default", "mcp-client"), ttl=ttl)
    expiry = time.monotonic() + ttl.total_seconds()
    kept = KeptConnection(client, inbound)
    try:
        before = _count(app)
        # The head is judged while the leaf is valid; the body completes after it expired.
        assert kept.post_held_back(until=expiry + 0.5) == 403
        assert _count(app) == before
    finally:
        kept.close()


# -- a streamed answer that outlives the caller's SVID ----------------------------------------


def _release(app) -> None:
    httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")


def test_twin_a_stream_to_a_caller_with_a_valid_svid_delivers_what_comes_later(world):
    app, inbound = _server(world)
    kept = KeptConnection(_svid(world, "client", ("ns", "default", "mcp-client")), inbound)
    try:
        kept.open_stream()
        _release(app)
        data, closed = kept.rest_of_stream(timeout=10)
        assert b"data: second" in data and not closed
    finally:
        kept.close()


def test_a_stream_is_cut_when_the_callers_svid_expires(world):
    app, inbound = _server(world)
    ttl = dt.timedelta(seconds=2)
    client = _svid(world, "short", ("ns", "default", "mcp-client"), ttl=ttl)
    expiry = time.monotonic() + ttl.total_seconds()
    kept = KeptConnection(client, inbound)
    try:
        kept.open_stream()  # opened while the leaf is valid; the app holds the rest back
        # The sidecar cuts the stream at the expiry (its deadline sweep runs at least once a
        # second); without the cut, nothing would arrive or close until the app is released.
        data, closed = kept.rest_of_stream(timeout=(expiry - time.monotonic()) + 5)
        assert closed and b"data: second" not in data, data
    finally:
        _release(app)
        kept.close()


# -- a streamed request body (an upload) that outlives the caller's SVID -----------------------


def _sunk(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/sunk").json()["size"]


def test_twin_an_upload_from_a_caller_with_a_valid_svid_arrives_whole(world):
    app, inbound = _server(world)
    kept = KeptConnection(_svid(world, "client", ("ns", "default", "mcp-client")), inbound)
    try:
        status, sent = trickle_upload(kept.sock, seconds=1.5)
    finally:
        kept.close()
    assert status == 200 and _sunk(app) == sent


def test_an_upload_is_cut_when_the_callers_svid_expires(world):
    # The head is judged while the leaf is valid; the body keeps coming after it expired.
    app, inbound = _server(world)
    ttl = dt.timedelta(seconds=2)
    kept = KeptConnection(_svid(world, "short", ("ns", "default", "mcp-client"), ttl=ttl), inbound)
    try:
        status, sent = trickle_upload(kept.sock, seconds=ttl.total_seconds() + 3)
    finally:
        kept.close()
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert _sunk(app) < sent  # what came after the cut never reached the app


# -- a streamed answer that outlives a binding moving its caller's App ID ----------------------

# The squatter's own SPIFFE ID bound to the App ID it already holds: the map changes, its caller
# does not (the plain ns/default/mcp-client form, no longer the App's, shows it in force).
OWN_BINDING = BINDING.replace("sa/agent-runner", "sa/mcp-client")


def _stream_across_binding(world, binding: str, probe: tuple[str, ...]) -> tuple[bytes, bool]:
    """Open the gated stream as the squatter, apply ``binding`` and wait until a new
    connection as ``probe`` shows it in force, release the app: what else arrives."""
    app, inbound = _server(world)
    squatter = _svid(world, "squatter", ("ns", "default", "sa", "mcp-client"))
    probe_dir = _svid(world, "probe", probe)
    kept = KeptConnection(squatter, inbound)
    try:
        kept.open_stream()
        assert _fresh_status(probe_dir, inbound) == 200
        world.apply("binding.yaml", binding)
        deadline = time.monotonic() + 20
        while _fresh_status(probe_dir, inbound) != 403:
            assert time.monotonic() < deadline, "the binding never took effect"
            time.sleep(0.2)
        _release(app)
        return kept.rest_of_stream(timeout=10)
    finally:
        _release(app)
        kept.close()


def test_a_squatters_stream_is_cut_when_a_binding_takes_its_app_id(world):
    data, closed = _stream_across_binding(world, BINDING, ("ns", "default", "sa", "mcp-client"))
    assert closed and b"data: second" not in data, data


def test_twin_a_stream_goes_on_when_a_binding_leaves_its_caller_the_app_id(world):
    data, closed = _stream_across_binding(world, OWN_BINDING, ("ns", "default", "mcp-client"))
    assert b"data: second" in data and not closed, data


def _upload_across_binding(world, binding: str, probe: tuple[str, ...]) -> tuple[int, int, int]:
    """Trickle a body to the app as the squatter, apply ``binding`` once the app has read part
    of it and wait until a new connection as ``probe`` shows it in force: (the squatter's
    status, bytes it sent, bytes the app read)."""
    app, inbound = _server(world)
    squatter = _svid(world, "squatter", ("ns", "default", "sa", "mcp-client"))
    probe_dir = _svid(world, "probe", probe)
    assert _fresh_status(probe_dir, inbound) == 200
    kept = KeptConnection(squatter, inbound)
    outcome: list[tuple[int, int]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(trickle_upload(kept.sock, seconds=6)), daemon=True
    )
    try:
        caller.start()
        deadline = time.monotonic() + 10
        while _sunk(app) == 0:  # the upload is under way: the app has read its first chunk
            assert time.monotonic() < deadline, "the upload never reached the app"
            time.sleep(0.05)
        world.apply("binding.yaml", binding)
        deadline = time.monotonic() + 20
        while _fresh_status(probe_dir, inbound) != 403:
            assert time.monotonic() < deadline, "the binding never took effect"
            time.sleep(0.2)
        in_flight = caller.is_alive()  # cut or not, the binding came while the body flowed
        caller.join(30)
        assert in_flight or outcome[0][0] != 200, "the upload ended before the binding applied"
    finally:
        kept.close()
    (status, sent), *_ = outcome
    return status, sent, _sunk(app)


def test_a_squatters_upload_is_cut_when_a_binding_takes_its_app_id(world):
    status, sent, sunk = _upload_across_binding(
        world, BINDING, ("ns", "default", "sa", "mcp-client")
    )
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert sunk < sent  # what came after the cut never reached the app


def test_twin_an_upload_goes_on_when_a_binding_leaves_its_caller_the_app_id(world):
    status, sent, sunk = _upload_across_binding(world, OWN_BINDING, ("ns", "default", "mcp-client"))
    assert status == 200 and sunk == sent


def test_a_stream_whose_head_comes_after_the_callers_svid_expired_never_starts(world):
    # The app holds its answer (head and all) past the caller's expiry, then sends it at once:
    # no read of it waits, so the stream's deadline alone would let it through whole.
    app, inbound = _server(world)
    ttl = dt.timedelta(seconds=2)
    client = _svid(world, "short", ("ns", "default", "mcp-client"), ttl=ttl)
    expiry = time.monotonic() + ttl.total_seconds()
    kept = KeptConnection(client, inbound)
    try:
        kept.sock.sendall(b"GET /sse-held HTTP/1.1\r\nhost: server\r\n\r\n")
        time.sleep(max(0.0, expiry - time.monotonic()) + 0.5)
        _release(app)
        kept.sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = kept.sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 403 ") and b"data: held" not in data, data
    finally:
        _release(app)
        kept.close()


# -- the outbound door: a stream from a peer whose App ID a binding moved elsewhere -------------

# The server's App ID given to another SPIFFE ID (the server's own SVID is sa/server), or to its
# own (the map changes, the peer it names does not).
SERVER_ELSEWHERE = BINDING.replace("sa/agent-runner", "sa/other-server").replace(
    "appID: mcp-client", "appID: server"
)
SERVER_IN_PLACE = SERVER_ELSEWHERE.replace("sa/other-server", "sa/server")


def _outbound_stream_across_binding(world, binding: str) -> tuple[bytes, bool]:
    """The app behind a caller sidecar streams from the server; ``binding`` is applied and
    the caller has installed the new map; the server app sends its next event."""
    app = world.procs.app()
    world.sidecar("server", ("ns", "default", "sa", "server"), app_port=app.ready["port"])
    caller = world.sidecar("caller", ("ns", "default", "sa", "caller"))
    sock = socket.create_connection(caller.address("http"), timeout=15)
    try:
        open_gated_stream(sock, INVOKE_GATED)
        applied = caller.stderr().count("identity map applied")
        world.apply("binding.yaml", binding)
        deadline = time.monotonic() + 20
        while caller.stderr().count("identity map applied") == applied:
            assert time.monotonic() < deadline, "the caller never installed the new map"
            time.sleep(0.05)
        _release(app)
        return rest_of_gated_stream(sock, timeout=10)
    finally:
        _release(app)
        sock.close()


def test_a_stream_from_a_peer_whose_app_id_a_binding_moved_is_cut(world):
    data, closed = _outbound_stream_across_binding(world, SERVER_ELSEWHERE)
    assert closed and b"data: second" not in data, data


def test_twin_a_stream_from_a_peer_the_new_map_still_names_goes_on(world):
    data, closed = _outbound_stream_across_binding(world, SERVER_IN_PLACE)
    assert b"data: second" in data and not closed, data
