"""An HTTP/1.1 server loop for the sidecar's listeners: accept, keep-alive, limits, drain.

One task per connection, each in a nursery owned by the server. Limits that keep one peer from
starving the others: a cap on established connections, shared per mTLS identity (when full, an
idle connection of the peer holding most is cut for the newcomer; see :mod:`.admission`), a
separate, smaller budget with a per-source share and a short deadline for connections still in
their TLS handshake (:mod:`.admission`: unauthenticated peers never take an established caller's
place), a deadline for each request head, a per-read timeout and an overall deadline inside
bodies, and an idle timeout between keep-alive requests.

Draining (SIGTERM) stops accepting, lets every in-flight exchange finish, closes connections that
sit idle between requests, and after a grace period cancels whatever is left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import h11
import structlog
import trio

from identity import AppIdentity, IdentityError, PeerSvid, current_identity_map, ssl_peer_svid

from .admission import EstablishedAdmission, HandshakeAdmission, Slot
from .connection import ConnectionLost, HttpConnection, IdleTimeout, ProtocolViolation
from .socket_stream import DirectStream, detach, tls_server_stream
from .wire import RequestHead, ResponseHead

log = structlog.get_logger("trustmesh.http")

SERVER_NAME = b"trustmesh"


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 1024  # established (TLS: handshake finished) connections
    max_connections_per_peer: int = 256  # of those, per mTLS identity (TLS listeners only)
    max_handshakes: int = 128  # connections still in their TLS handshake
    max_handshakes_per_source: int = 32
    max_head_bytes: int = 16 * 1024
    handshake_timeout: float = 5.0
    head_timeout: float = 5.0  # first request on a connection: accept → complete head
    keepalive_timeout: float = 60.0  # between requests on a kept-alive connection
    # Any single read inside a request, and any write that waits: to a caller, to the app, or
    # to a peer sidecar that takes none of our bytes for this long.
    read_timeout: float = 30.0
    body_timeout: float = 30.0  # a whole request body the sidecar holds (inspected, small)
    drain_timeout: float = 10.0

    def with_overrides(self, items: list[str]) -> ServerLimits:
        """These limits with ``NAME=VALUE`` overrides (``--limit``); ValueError names a bad one."""
        fields = {f.name: f.type for f in dataclasses.fields(self)}
        changes: dict[str, float | int] = {}
        for item in items:
            name, sep, text = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in fields:
                known = ", ".join(sorted(fields))  # the message names every limit
                raise ValueError(
                    f"unknown limit {item!r}: expected NAME=VALUE, NAME one of: {known}"
                )
            kind = int if fields[name] in (int, "int") else float
            try:
                value = kind(text)
            except ValueError:
                raise ValueError(f"limit {name} needs a number, got {text!r}") from None
            if value <= 0:
                raise ValueError(f"limit {name} must be positive, got {text!r}")
            changes[name] = value
        return dataclasses.replace(self, **changes)


@dataclass
class ConnectionInfo:
    """What the handler knows about the peer before it reads a byte of HTTP."""

    peer_host: str
    peer_port: int
    peer_identity: AppIdentity | None = None
    peer_identity_error: str | None = None  # set when TLS succeeded but the ID is unusable
    peer_svid: PeerSvid | None = None  # SPIFFE ID + expiry: each request is judged again by it


Handler = Callable[[HttpConnection, h11.Request, ConnectionInfo], Awaitable[None]]


def json_error_body(code: str, message: str) -> bytes:
    return json.dumps({"errorCode": code, "message": message}).encode()


async def send_simple_response(
    conn: HttpConnection,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Answer the current request ourselves (errors, denials, admin pages)."""
    if conn.http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        raise ConnectionLost("cannot answer: a response is already under way")
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"server", SERVER_NAME),
    ]
    closing = False
    if extra_headers:
        headers += extra_headers
        closing = any(n == b"connection" and b"close" in v.lower() for n, v in extra_headers)
    if conn.http.their_state is not h11.DONE and not closing and not _whole_request_in(conn):
        # We answer before reading their body: say so, and close afterwards.
        headers.append((b"connection", b"close"))
    if getattr(conn.http, "_request_method", None) == b"HEAD":  # both engines keep it there
        body = b""  # the length above is what a GET would carry; an answer to HEAD has no body
    await conn.send_message(ResponseHead(status, headers, _reason(status)), body)


def _whole_request_in(conn: HttpConnection) -> bool:
    """True if the rest of the request (its body, or just the end of a bodiless one: a denied
    GET) had already arrived; it is consumed, and the connection stays good for the next
    request. Otherwise the answer closes the connection, as the body is still on its way."""
    take_body = getattr(conn.http, "take_body", None)  # the h11 engine (admin port) has none
    return take_body is not None and take_body() is not None


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def send_error(conn: HttpConnection, status: int, code: str, message: str) -> None:
    await send_simple_response(conn, status, json_error_body(code, message))


@dataclass
class HttpServer:
    name: str
    handler: Handler
    limits: ServerLimits = field(default_factory=ServerLimits)
    ssl_context: Callable[[], ssl.SSLContext] | None = None  # called per connection: hot swap
    engine: type | None = None  # the HTTP/1.1 engine (default: llhttp; h11 for the admin port)
    draining: bool = False
    _accept_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    _idle_connections: set[HttpConnection] = field(default_factory=set)  # waiting for a head
    active_connections: int = 0
    in_flight: int = 0
    # Bumped by retire_connections: a connection accepted in an earlier epoch ends after its
    # exchange in progress (or at once, if it sits idle).
    epoch: int = 0
    admission: HandshakeAdmission = field(init=False)
    established: EstablishedAdmission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = HandshakeAdmission(
            self.limits.max_handshakes,
            self.limits.max_handshakes_per_source,
            self.limits.handshake_timeout,
        )
        # Per-peer shares mean something only where peers are told apart by identity: a
        # plaintext listener serves the one local app (on loopback, every source is the same).
        share = self.limits.max_connections
        if self.ssl_context is not None:
            share = min(share, self.limits.max_connections_per_peer)
        self.established = EstablishedAdmission(self.limits.max_connections, share)

    async def serve(
        self, listeners: list[trio.abc.Listener], *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(self._accept_loop, listener, connections)
                task_status.started()
            # Draining: acceptors are gone; give the open connections a grace period.
            with trio.move_on_after(self.limits.drain_timeout):
                while self.active_connections:
                    await trio.sleep(0.05)
            connections.cancel_scope.cancel()

    def drain(self) -> None:
        self.draining = True
        self._accept_scope.cancel()
        for conn in list(self._idle_connections):
            conn.interrupt()

    def retire_connections(self) -> None:
        """End every connection accepted so far, as a drain would but without stopping the
        listener: idle ones now, busy ones once their exchange ends. For a trust bundle that
        dropped a CA: a connection verified under the old bundle must not serve another request
        (its peer, if still trusted, reconnects and is verified again)."""
        self.epoch += 1
        for conn in list(self._idle_connections):
            conn.interrupt()

    async def _accept_loop(self, listener: trio.abc.Listener, nursery: trio.Nursery) -> None:
        with self._accept_scope:
            async with listener:
                while True:
                    try:
                        stream = await listener.accept()
                    except OSError as exc:  # EMFILE and friends: back off, keep serving
                        log.error("accept failed", listener=self.name, error=str(exc))
                        await trio.sleep(0.1)
                        continue
                    # TLS connections are admitted by the handshake budget, then counted.
                    nursery.start_soon(self._connection, stream)

    def _admit(self, info: ConnectionInfo) -> Slot | None:
        """A share of the established connections for this peer (:mod:`.admission`)."""
        identity = info.peer_identity
        # The SPIFFE ID the certificate presented; else (plaintext, or an unusable ID) the source.
        key = f"id:{identity.spiffe_id}" if identity is not None else f"src:{info.peer_host}"
        slot = self.established.admit(key)
        if slot is None:
            log.warning("connection limit reached", listener=self.name, peer=key)
        return slot

    async def _connection(self, stream: trio.abc.Stream) -> None:
        slot = None
        epoch = self.epoch  # before the handshake: its bundle is the one in force now
        try:
            info = _peer_address(stream)
            if self.ssl_context is not None:
                stream = tls_server_stream(stream, self.ssl_context())
                if not await self._handshake(stream, info):
                    return
                try:
                    info.peer_svid = ssl_peer_svid(stream)
                    info.peer_identity = info.peer_svid.app_identity(current_identity_map())
                except IdentityError as exc:
                    info.peer_identity_error = str(exc)
            elif isinstance(stream, trio.SocketStream):
                stream = DirectStream(detach(stream))
            slot = self._admit(info)
            if slot is None:
                return
            self.active_connections += 1
            await self._serve_requests(stream, info, slot, epoch)
        except Exception:
            # A bug reached by one connection must not take the listener down with it.
            log.exception("connection handler failed", listener=self.name)
        finally:
            if slot is not None:
                self.established.release(slot)
                self.active_connections -= 1
            with trio.move_on_after(1) as scope:
                scope.shield = True
                with contextlib.suppress(
                    trio.BrokenResourceError, trio.ClosedResourceError, OSError
                ):
                    await stream.aclose()

    async def _handshake(self, stream, info: ConnectionInfo) -> bool:
        """Run the TLS handshake inside the handshake budget; False if it did not finish."""
        scope = self.admission.admit(info.peer_host)
        try:
            with scope:
                await stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            log.info(
                "tls handshake refused", listener=self.name, peer=info.peer_host, error=_short(exc)
            )
            return False
        finally:
            self.admission.done(scope)
        if scope.cancelled_caught:
            # Its deadline passed, or a newer handshake needed its place in the budget.
            log.info("tls handshake cut", listener=self.name, peer=info.peer_host)
            return False
        return True

    async def _serve_requests(
        self, stream: trio.abc.Stream, info: ConnectionInfo, slot: Slot, epoch: int = 0
    ) -> None:
        conn = HttpConnection(
            stream,
            h11.SERVER,
            max_head_bytes=self.limits.max_head_bytes,
            read_timeout=self.limits.read_timeout,
            body_timeout=self.limits.body_timeout,
            engine=self.engine,
        )
        first = True
        while not self.draining and self.epoch == epoch:
            wait = self.limits.head_timeout if first else self.limits.keepalive_timeout
            # The wait for a head is a phase of the connection, not a cancel scope of its own:
            # a read that has to wait takes the earlier of this and the per-read deadline.
            deadline = trio.current_time() + wait
            saved = conn.begin_phase(deadline, _idle_timeout)
            self._idle_connections.add(conn)
            slot.idle = conn  # idle: may be cut (interrupted) to make room for another peer
            try:
                try:
                    event = await conn.next_event()
                except ProtocolViolation as exc:
                    with trio.move_on_at(deadline):
                        await self._answer_violation(conn, exc)
                    return
                except ConnectionLost:
                    return  # idle, too slow, draining, or gone: close quietly
            finally:
                self._idle_connections.discard(conn)
                conn.end_phase(saved)
                slot.idle = None
            # (h11's event classes are ABCs: the exact type is checked first, for free)
            if type(event) is not RequestHead and not isinstance(event, h11.Request):
                return  # ConnectionClosed
            first = False
            self.in_flight += 1
            try:
                await self.handler(conn, event, info)
            except ProtocolViolation as exc:
                await self._answer_violation(conn, exc)
                return
            except ConnectionLost:
                return
            finally:
                self.in_flight -= 1
            if not conn.reusable or slot.evicted:
                return
            conn.start_next_cycle()

    async def _answer_violation(self, conn: HttpConnection, exc: ProtocolViolation) -> None:
        # h11 lets us answer a request it could not parse as long as we have not started a
        # response; the connection is closed afterwards either way.
        if conn.http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(ConnectionLost):
                await send_error(conn, exc.http_status, exc.code, f"malformed request: {exc}")


def _idle_timeout() -> IdleTimeout:
    return IdleTimeout("no request head in time, or the listener is draining")


def _peer_address(stream: trio.abc.Stream) -> ConnectionInfo:
    try:
        host, port = stream.socket.getpeername()[:2]  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        host, port = "", 0
    return ConnectionInfo(host, port)


def _short(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}"
