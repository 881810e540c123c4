"""``trustmesh ca serve``: the signing service on HTTPS, with trio and h11.

One request per connection (``Connection: close``): enrolment and renewal happen once per
workload per half-lifetime, so keep-alive buys nothing and one-shot connections keep the state
machine trivial. Every step a client controls runs under a deadline (the TLS handshake, reading
the request, draining an over-long body), so a slow or silent client costs one task, not the
service. The request body is capped before it is read: a ``Content-Length`` over the limit is
answered 413 at once.

TLS: the server presents a leaf the CA issues itself for
``spiffe://<td>/ns/trustmesh-system/trustmesh-ca``, re-issued at half-life and swapped in whole.
Client certificates are optional (``CERT_OPTIONAL``): enrolment has none, renewal has one. When
one is presented OpenSSL verifies it against the bundle during the handshake and refuses the
connection if it does not chain, so the service only ever sees verified identities.

Admission (#10.7): a finished handshake without a certificate proves nothing, so such a
connection is as unauthenticated as a pending handshake. It never takes one of the slots kept for
authenticated (mTLS) clients: until its request has been read it lives in a budget of its own —
smaller, with a per-source share and a short deadline, where a full budget cuts the oldest of the
same source rather than the newcomer (:class:`HandshakeAdmission`). Silent anonymous connections
therefore only ever evict each other, and renewals keep being served. The mTLS slots are shared
per identity (:class:`EstablishedAdmission`): when a share or the whole is full, a connection
still silent (no request read yet) of that identity, or of the one holding most, is cut for the
newcomer, so a valid certificate does not buy the right to hold every slot either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import ssl
from collections.abc import Iterator
from contextlib import AbstractContextManager

import h11
import structlog
import trio

from identity import IdentityError, TrustBundle, X509Svid, server_context, ssl_peer_identity
from sidecar.http.admission import EstablishedAdmission, HandshakeAdmission, Slot

from ._authority import CertificateAuthority, ca_server_identity
from ._errors import BodyTooLarge, CAError, RequestRefused, RequestTimeout
from .home import CALayout, locked
from .service import ApiRequest, ApiResponse, SigningService, error_response, route
from .store import load_serving

log = structlog.get_logger("trustmesh.ca")

STATE_POLL = 1.0  # seconds between looks at the CA's files (a rotation step, applied)
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
DEFAULT_IO_TIMEOUT = 10.0
MAX_CONNECTIONS = 256  # mTLS connections past their TLS handshake
MAX_CONNECTIONS_PER_IDENTITY = 32
MAX_HANDSHAKES = 64  # connections still in it: a budget of their own (#10.7)
MAX_HANDSHAKES_PER_SOURCE = 16
HANDSHAKE_TIMEOUT = 5.0
MAX_ANONYMOUS = 64  # finished handshakes without a client certificate, until their request is read
MAX_ANONYMOUS_PER_SOURCE = 16
ANONYMOUS_REQUEST_TIMEOUT = 5.0
SERVER_CERT_TTL = dt.timedelta(hours=24)
SERVER_CERT_RETRY = 60.0  # seconds between tries to re-issue it once the CA cannot sign
_DRAIN_LIMIT = 1024 * 1024
_DRAIN_TIMEOUT = 2.0
_CLOSE_TIMEOUT = 1.0


class _Refused(Exception):
    """Carries a refusal out of the request reader, with whether the body may still be coming."""

    def __init__(self, error: CAError | h11.RemoteProtocolError, *, drain: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.drain = drain


def _protocol_error_response(exc: h11.RemoteProtocolError) -> ApiResponse:
    error = RequestRefused(f"malformed HTTP request: {exc}")
    error.http_status = exc.error_status_hint
    return error_response(error)


class CAServer:
    """Serves a :class:`SigningService` over HTTPS; :meth:`serve` is a ``nursery.start`` target."""

    def __init__(
        self,
        service: SigningService,
        *,
        io_timeout: float = DEFAULT_IO_TIMEOUT,
        max_body: int = MAX_BODY_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        max_connections_per_identity: int = MAX_CONNECTIONS_PER_IDENTITY,
        handshakes: HandshakeAdmission | None = None,
        anonymous: HandshakeAdmission | None = None,
        state: CALayout | None = None,
        state_signature: tuple | None = None,
    ) -> None:
        self.service = service
        # The CA's files, watched so that a rotation step (ca.rotation) takes effect in a
        # running server: the CA that signs, and the bundle it hands out and trusts.
        self.state = state
        # The files as they were when ``service`` was loaded from them (load_served_files): a
        # step that lands before the watch starts is then a change like any other.
        self._state_signature = state_signature
        # Deadlines bound how long each connection lasts; this bounds how many there are. Only
        # mTLS clients hold these slots, shared per identity; one still silent may be cut for a
        # newcomer. Unauthenticated peers (a handshake not finished, or finished without a
        # certificate) have budgets of their own, where a full one cuts its oldest.
        self.established = EstablishedAdmission(
            max_connections, min(max_connections, max_connections_per_identity)
        )
        self.handshakes = handshakes or HandshakeAdmission(
            MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE, min(io_timeout, HANDSHAKE_TIMEOUT)
        )
        self.anonymous = anonymous or HandshakeAdmission(
            MAX_ANONYMOUS, MAX_ANONYMOUS_PER_SOURCE, min(io_timeout, ANONYMOUS_REQUEST_TIMEOUT)
        )
        self.io_timeout = io_timeout
        self.max_body = max_body
        self._server_svid, self._context = self._new_context(service.authority, service.trusted)

    @property
    def server_svid(self) -> X509Svid:
        assert self._server_svid is not None
        return self._server_svid

    def _new_context(
        self, authority: CertificateAuthority, trusted: TrustBundle
    ) -> tuple[X509Svid, ssl.SSLContext]:
        """The server's own leaf from ``authority`` and a context trusting ``trusted``; raises
        :class:`CAError` (an expired CA signs nothing) without touching the running ones."""
        svid = authority.issue(
            ca_server_identity(authority.trust_domain),
            now=self.service.clock(),
            ttl=SERVER_CERT_TTL,
        )
        context = server_context(svid, trusted)
        context.verify_mode = ssl.CERT_OPTIONAL
        return svid, context

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` (0 picks a port); ``task_status.started`` gets the listeners."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        await self.serve_listeners(listeners, task_status=task_status)

    async def serve_listeners(self, listeners, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rotate_server_certificate)
            if self.state is not None:
                nursery.start_soon(self._follow_state, self.state)
            started = await nursery.start(trio.serve_listeners, self._handle, listeners)
            log.info("ca listening", addresses=[listener_url(ln) for ln in started])
            task_status.started(started)

    async def _rotate_server_certificate(self) -> None:
        while True:
            issued_at = self.service.clock()
            delay = (self.server_svid.renewal_time(issued_at) - issued_at).total_seconds()
            await trio.sleep(max(delay, 1.0))
            try:
                svid, context = self._new_context(self.service.authority, self.service.trusted)
            except CAError as exc:  # the CA expired: say so, keep serving, never crash
                log.error("ca server certificate not renewed", error=str(exc))
                await trio.sleep(SERVER_CERT_RETRY)
                continue
            self._server_svid, self._context = svid, context
            log.info("ca server certificate renewed", not_after=str(self.server_svid.not_after))

    async def _follow_state(self, layout: CALayout) -> None:
        """Reload the CA and its bundle when their files change (a ``ca rotate`` step).

        Files that cannot be loaded leave the running CA in place and are tried again at every
        poll until they load: a repair need not touch them in a way the signature sees (a
        ``chmod`` leaves the mtime alone), and a retired root must not stay trusted for renewals
        because the first look at the retire failed. The error is logged when it changes.
        """
        seen = self._state_signature or _state_signature(layout)
        failing: str | None = None
        while True:
            await trio.sleep(STATE_POLL)
            current = _state_signature(layout)
            if current == seen and failing is None:
                continue
            try:
                # In a thread: a 'ca' command holding the lock (suspended with ^Z, say) must
                # delay the reload, not freeze every connection of the CA with it.
                authority, trusted, current = await trio.to_thread.run_sync(
                    load_served_files, layout, abandon_on_cancel=True
                )
                svid, context = self._new_context(authority, trusted)
            except CAError as exc:
                if str(exc) != failing:
                    log.error(
                        "ca files changed but cannot be loaded; keeping the CA", error=str(exc)
                    )
                failing = str(exc)
                continue
            seen, failing = current, None
            self.service.authority, self.service.trusted = authority, trusted
            self._server_svid, self._context = svid, context
            log.info(
                "ca reloaded",
                roots=len(trusted.authorities),
                not_after=authority.not_after.isoformat(),
            )

    async def _handle(self, tcp: trio.abc.Stream) -> None:
        stream = trio.SSLStream(tcp, self._context, server_side=True)
        source = _source(tcp)
        scope = self.handshakes.admit(source)
        try:
            with scope:
                await stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            log.info("tls handshake failed", error=str(exc) or type(exc).__name__)
            await trio.aclose_forcefully(stream)
            return
        finally:
            self.handshakes.done(scope)
        if scope.cancelled_caught:
            log.info("tls handshake cut: deadline passed or the budget needed room")
            await trio.aclose_forcefully(stream)
            return
        if not stream.getpeercert(binary_form=True):
            await self._handle_tls(stream, self._anonymous_reading(source))  # never takes a slot
            return
        slot = self.established.admit(_peer_key(stream, source))
        if slot is None:
            log.warning("connection refused: too many open connections")
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._handle_tls(stream, _idle_reading(slot))
        finally:
            self.established.release(slot)

    async def _handle_tls(
        self, stream: trio.SSLStream, reading: AbstractContextManager[trio.CancelScope]
    ) -> None:
        try:
            await self._exchange(stream, reading)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            with trio.move_on_after(_CLOSE_TIMEOUT) as scope:
                await stream.aclose()
            if scope.cancelled_caught:
                await trio.aclose_forcefully(stream)

    @contextlib.contextmanager
    def _anonymous_reading(self, source: str) -> Iterator[trio.CancelScope]:
        """Read an anonymous connection's request in a place of its budget (with its deadline,
        cut if a newer one needs the room), given back as soon as the request is read."""
        scope = self.anonymous.admit(source)
        try:
            with scope:
                yield scope
        finally:
            self.anonymous.done(scope)

    async def _exchange(
        self, stream: trio.SSLStream, reading: AbstractContextManager[trio.CancelScope]
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        with reading as scope:
            try:
                request = await self._read_request(conn, stream)
            except _Refused as refused:
                request = refused
        if scope.cancelled_caught:
            if trio.current_time() < scope.deadline:
                log.info("connection cut: its budget needed the room")
                return
            request = _Refused(RequestTimeout("request not received in time"), drain=False)
        if isinstance(request, _Refused):
            refused = request
            if isinstance(refused.error, h11.RemoteProtocolError):
                response = _protocol_error_response(refused.error)
            else:
                response = error_response(refused.error)
            log.info("request refused", error=str(refused.error), status=response.status)
            await _send(conn, stream, response)
            if refused.drain:
                await _drain(conn, stream)
            return
        if request is None:
            return
        try:
            request = _with_peer(request, stream)
        except IdentityError as exc:
            await _send(conn, stream, error_response(exc))
            return
        try:
            response = await trio.to_thread.run_sync(self.service.handle, request)
        except Exception:
            # A bug must cost one request, not the listener: serve_listeners would otherwise
            # propagate it and stop the whole service.
            log.exception("internal error while handling a request", path=request.path)
            response = error_response(CAError("internal error; see the CA's log"))
        await _send(conn, stream, response)

    async def _read_request(self, conn: h11.Connection, stream) -> ApiRequest | None:
        """Read one request; ``None`` if the client closed first. Raises :class:`_Refused`."""
        head: h11.Request | None = None
        body = bytearray()
        with trio.move_on_after(self.io_timeout) as scope:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise _Refused(exc, drain=False) from exc
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(MAX_HEADER_BYTES)
                    conn.receive_data(data)
                    if not data and head is None:
                        return None
                    continue
                if isinstance(event, h11.Request):
                    head = event
                    self._check_head(event)
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        raise _Refused(self._too_large(), drain=True)
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    return None
        if scope.cancelled_caught:
            raise _Refused(RequestTimeout("request not received in time"), drain=False)
        assert head is not None
        headers = {name.decode("latin-1"): value for name, value in head.headers}
        authorization = headers.get("authorization")
        return ApiRequest(
            method=head.method.decode("ascii", "replace"),
            path=head.target.decode("ascii", "replace"),
            authorization=authorization.decode("latin-1") if authorization is not None else None,
            body=bytes(body),
        )

    def _check_head(self, head: h11.Request) -> None:
        try:
            route(head.method.decode("ascii", "replace"), head.target.decode("ascii", "replace"))
        except CAError as exc:
            raise _Refused(exc, drain=True) from exc
        for name, value in head.headers:
            if name == b"content-length" and int(value) > self.max_body:
                raise _Refused(self._too_large(), drain=True)

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(f"request body is larger than the {self.max_body}-byte limit")


@contextlib.contextmanager
def _idle_reading(slot: Slot) -> Iterator[trio.CancelScope]:
    """Read an mTLS client's request while its slot counts as idle: cut if room is needed."""
    with trio.CancelScope() as scope:
        slot.idle = _Interruptible(scope)
        try:
            yield scope
        finally:
            slot.idle = None


class _Interruptible:
    """What eviction cuts: the scope this connection reads its request in."""

    __slots__ = ("scope",)

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope

    def interrupt(self) -> None:
        self.scope.cancel()


def _peer_key(stream: trio.SSLStream, source: str) -> str:
    """Whose share an mTLS connection counts against: its SPIFFE ID (else, its source)."""
    try:
        return f"id:{ssl_peer_identity(stream).spiffe_id}"
    except IdentityError:
        return f"src:{source}"


def _source(tcp: trio.abc.Stream) -> str:
    try:
        return str(tcp.socket.getpeername()[0])  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return ""


def _with_peer(request: ApiRequest, stream: trio.SSLStream) -> ApiRequest:
    """Attach the client certificate's identity, if the client presented one."""
    if not stream.getpeercert(binary_form=True):
        return request
    peer = ssl_peer_identity(stream)
    return ApiRequest(request.method, request.path, request.authorization, request.body, peer)


async def _send(conn: h11.Connection, stream, response: ApiResponse) -> None:
    headers = [
        *response.headers,
        ("content-length", str(len(response.body))),
        ("connection", "close"),
    ]
    data = conn.send(h11.Response(status_code=response.status, headers=headers))
    data += conn.send(h11.Data(data=response.body))
    data += conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _drain(conn: h11.Connection, stream) -> None:
    """Read and discard the rest of a refused request, briefly and up to a cap, so the client's
    pending writes do not turn our close into a reset that destroys the answer unread."""
    received = 0
    with trio.move_on_after(_DRAIN_TIMEOUT):
        while received < _DRAIN_LIMIT:
            try:
                event = conn.next_event()
            except h11.ProtocolError:
                return
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
            if event is h11.NEED_DATA:
                data = await stream.receive_some(MAX_HEADER_BYTES)
                conn.receive_data(data)
                received += len(data)


def load_served_files(layout: CALayout) -> tuple[CertificateAuthority, TrustBundle, tuple]:
    """The CA, its bundle and the files' signature, read under the CA's lock: never half of a
    rotation step, and the signature is that of exactly what was loaded."""
    with locked(layout.lock):
        authority, trusted = load_serving(layout)
        return authority, trusted, _state_signature(layout)


def _state_signature(layout: CALayout) -> tuple:
    signature = []
    for path in (layout.root_cert, layout.issuer_cert, layout.issuer_key, layout.bundle):
        try:
            st = path.stat()
        except OSError:
            signature.append(None)
        else:
            signature.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(signature)


def listener_url(listener) -> str:
    host, port = listener.socket.getsockname()[:2]
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


async def run_ca_server(server: CAServer, host: str, port: int, on_ready=None) -> None:
    """Run ``server`` until cancelled; ``on_ready(urls)`` once it is listening.

    The listeners are opened outside any nursery so that "address in use" arrives as a plain
    ``OSError`` the CLI can turn into one line, not an exception group.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    if on_ready is not None:
        on_ready([listener_url(ln) for ln in listeners])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
        await server.serve_listeners(listeners)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """SIGTERM/SIGINT end the service cleanly (exit 0), as a runner or init system expects.

    Requests are short (one CSR, one answer), so there is nothing to drain.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("ca stopping", signal=signal.Signals(signum).name)
            scope.cancel()
            return
