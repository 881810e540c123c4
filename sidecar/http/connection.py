"""A thin trio adapter around one HTTP/1.1 protocol engine: bytes in and out, events out.

The engine parses and frames: :class:`.wire.Http1` (llhttp) on the data plane's hot path, or
``h11.Connection`` (the admin port; the oracle in tests) — they share h11's interface, events
and states. This class only moves bytes, bounds what a peer can make us hold (the engine caps
the request line plus headers), answers ``Expect: 100-continue`` when the body is actually
wanted, refuses ambiguous framing (:mod:`.framing`, for h11, which would resolve it silently),
and turns every transport failure into one exception, :class:`ConnectionLost`, so callers have
a single thing to catch.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Callable

import h11
import trio

from ..errors import SidecarError
from .deadlines import Sweeper, sweeper
from .framing import FramingProblem, check_framing_headers, check_raw_head, raw_head
from .socket_stream import DirectStream, detach
from .wire import NEED_DATA, Http1, ResponseHead, as_h11

READ_SIZE = 64 * 1024
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
YIELD_EVERY = 16  # reads served without waiting before one is made to yield to the scheduler
# Responses that never have a body, whatever their headers say (RFC 9112 §6.3).
BODYLESS_STATUSES = frozenset({204, 304})


class ConnectionLost(SidecarError):
    """The peer went away, or the transport broke, in the middle of an exchange."""

    code = "ERR_CONNECTION_LOST"
    http_status = 502


class ReadTimeout(ConnectionLost):
    """The peer sent nothing for longer than the connection's read timeout."""

    code = "ERR_TIMEOUT"
    http_status = 408


class IdleTimeout(ConnectionLost):
    """No request head within the listener's head or keep-alive deadline, or the listener
    began draining while this connection waited for one: it is closed quietly."""

    code = "ERR_TIMEOUT"
    http_status = 408


class ProtocolViolation(SidecarError):
    """The peer broke HTTP/1.1; ``http_status`` is h11's hint (400, 431, 501, …)."""

    code = "ERR_MALFORMED_REQUEST"

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


_TRANSPORT_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError)


class HttpConnection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        role: type[h11.CLIENT] | type[h11.SERVER],
        *,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        read_timeout: float | None = None,
        body_timeout: float | None = None,
        engine: type | None = None,
        send_timeout: float | None = None,
    ) -> None:
        if isinstance(stream, trio.SocketStream):
            stream = DirectStream(detach(stream))  # a socket is driven directly, not via trio's
        self.stream = stream
        self._receive_nowait = getattr(stream, "receive_nowait", None)
        # A socket driven directly waits under a deadline kept by the run's sweeper
        # (:mod:`.deadlines`); any other stream under a cancel scope per waiting read.
        self._direct = type(stream) is DirectStream
        if send_timeout is None:
            send_timeout = read_timeout
        if self._direct and send_timeout is not None:
            # A peer that stops taking our bytes is bounded as one that stops sending them.
            # Upstream connections have no read timeout (an SSE stream may idle for long) but
            # do bound writes: an app or a peer sidecar that stops reading a request body.
            stream.send_timeout = send_timeout
        # After nothing was there (or a request was just sent), wait before reading again.
        self._receive_after_wait = getattr(stream, "receive_after_wait", None)
        self._nothing_yet = False
        # Between requests on a TLS connection we serve, wait before reading: a caller sends its
        # next request only once it has our answer, so a read would find nothing, and a TLS read
        # that finds nothing costs an SSLWantReadError built and caught. (A pipelining caller's
        # bytes are in the kernel, where the wait sees them, or decrypted and held by OpenSSL,
        # which ``buffered`` checks.)
        self._wait_between_requests = (
            self._direct and role is h11.SERVER and isinstance(stream.socket, ssl.SSLSocket)
        )
        self._sweeper: Sweeper | None = None
        self.wait_deadline = math.inf  # while a direct read waits under a deadline
        self._expired = False
        self._unyielded = 0  # reads in a row that found bytes waiting and did not yield
        # Bounds each single read: a peer that stalls mid-message cannot hold us forever.
        # None for upstream reads, where an SSE stream may legitimately idle for long.
        self.read_timeout = read_timeout
        # Bounds reading a whole body we hold (``relay.read_whole_body``), however it trickles.
        self.body_timeout = body_timeout
        engine = engine or Http1
        self.http = engine(role, max_incomplete_event_size=max_head_bytes)
        # h11 unfolds folded lines and resolves Content-Length beside chunked silently, and
        # builds heads it never sized: check those ourselves. llhttp refuses them itself.
        self._strict_checks = engine is h11.Connection
        self.max_head_bytes = max_head_bytes
        # Client side: the method of the request under way and whether its answer is one whose
        # framing a mis-behaving server can contradict (see :attr:`reusable`).
        self._sent_method: bytes | None = None
        self._bodyless_answer = False
        # The peer's state in which the next bytes are a head (a request, or a response).
        self._head_state = h11.IDLE if role is h11.SERVER else h11.SEND_RESPONSE
        # A deadline over a whole phase (a head to wait for, a body to read whole), with the
        # error that phase ends in. It is not a cancel scope of its own: a read that has to wait
        # enters one scope whose deadline is the earlier of this and the per-read timeout, and
        # a read that finds bytes waiting enters none (#11: ~5 µs per scope, 4 per request).
        self._phase_deadline = math.inf
        self._phase_error: Callable[[], SidecarError] | None = None
        self._interrupted = False  # the phase was ended from outside (a listener draining)
        # Upstream side: None, or the exchange under way must not reach its caller any more
        # and this makes the error it ends with (a change of trust or of policy marks it
        # through relay.cut_exchange; see sidecar.proxy.exchanges).
        self.cut: Callable[[], SidecarError] | None = None
        # Upstream side, while a caller's body streams through it: that caller's connection, so
        # that cutting the exchange (relay.cut_exchange) also stops the upload.
        self.upload_from: HttpConnection | None = None
        self._wait_scope: trio.CancelScope | None = None

    async def next_event(self) -> h11.Event:
        """The next complete event; raises :class:`ConnectionLost` or :class:`ProtocolViolation`."""
        if self._strict_checks:
            return await self._next_h11_event()
        http = self.http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._broken_protocol(exc) from exc
            if event is not NEED_DATA:
                if type(event) is ResponseHead:
                    self._bodyless_answer = (
                        self._sent_method == b"HEAD" or event.status_code in BODYLESS_STATUSES
                    )
                return event
            if http.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                data = await self._receive()
            except _TRANSPORT_ERRORS as exc:
                raise ConnectionLost(f"connection lost while reading: {exc!r}") from exc
            http.receive_data(data)

    def _broken_protocol(self, exc: Exception) -> SidecarError:
        status = getattr(exc, "error_status_hint", None) or getattr(exc, "http_status", 400)
        if self.http.our_role is h11.CLIENT:
            # An upstream that breaks HTTP (or hangs up mid-message) is a bad gateway
            # for our caller, not a malformed request from them.
            return ConnectionLost(f"upstream broke the protocol: {exc}")
        return ProtocolViolation(str(exc), status)

    async def _next_h11_event(self) -> h11.Event:
        """:meth:`next_event` for h11 (the admin port, and the oracle in tests), which resolves
        folded lines and ambiguous framing silently: those are checked here on the raw head."""
        while True:
            awaiting = self.http.their_state is self._head_state
            buffered = self.http.trailing_data[0] if awaiting else b""
            try:
                event = self.http.next_event()
                if isinstance(event, h11.Request | h11.Response):
                    check_raw_head(raw_head(buffered))
                    check_framing_headers(event.headers, event.http_version)
            except (h11.RemoteProtocolError, FramingProblem) as exc:
                raise self._broken_protocol(exc) from exc
            if isinstance(event, h11.Request | h11.Response):
                self._check_head_size(event)
                if isinstance(event, h11.Response):
                    self._bodyless_answer = (
                        self._sent_method == b"HEAD" or event.status_code in BODYLESS_STATUSES
                    )
            if event is not h11.NEED_DATA:
                return event
            if self.http.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                data = await self._receive()
            except _TRANSPORT_ERRORS as exc:
                raise ConnectionLost(f"connection lost while reading: {exc!r}") from exc
            self.http.receive_data(data)

    def begin_phase(self, deadline: float, error: Callable[[], SidecarError]) -> tuple:
        """Bound every read until :meth:`end_phase` by ``deadline`` (trio time): a read still
        waiting then raises ``error()``. A phase inside another keeps the earlier deadline (and
        its error), as nested cancel scopes would. Returns what ``end_phase`` restores."""
        saved = (self._phase_deadline, self._phase_error)
        if deadline < self._phase_deadline:
            self._phase_deadline = deadline
            self._phase_error = error
        return saved

    def end_phase(self, saved: tuple) -> None:
        self._phase_deadline, self._phase_error = saved
        self._interrupted = False

    def interrupt(self) -> None:
        """End the current phase now: a read waiting in it stops, and none starts waiting."""
        self._interrupted = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        elif self.wait_deadline != math.inf:
            self.expire()

    def expire(self) -> None:
        """Wake the direct read waiting under a deadline (called by the sweeper when the deadline
        passed, or by :meth:`interrupt`): its socket wait raises ``ClosedResourceError``, which
        :meth:`_receive` turns into the timeout. The socket is not read again.

        ``notify_closing`` reaches only a task that is waiting. One that a byte has just woken
        (a TLS record trickled byte by byte: each byte wakes the read, which finds the record
        still incomplete and waits again) would miss it and wait on past the deadline, so the
        stream is told too, and stops before it waits again."""
        self._expired = True
        self.stream.read_expired = True
        trio.lowlevel.notify_closing(self.stream.socket)

    def _phase_over(self) -> bool:
        return self._phase_error is not None and (
            self._interrupted or trio.current_time() >= self._phase_deadline
        )

    async def _receive(self) -> bytes:
        """The next bytes from the peer: at once if they are already there (no deadline, no
        wait), else within ``read_timeout`` and the phase's deadline."""
        nothing_yet = self._nothing_yet
        if nothing_yet:
            self._nothing_yet = False  # a request just sent: its answer cannot be here yet
        elif self._receive_nowait is not None:
            data = self._receive_nowait(READ_SIZE)
            if data is not None:
                self._unyielded += 1
                if self._unyielded >= YIELD_EVERY:
                    # A peer that keeps the socket full (a pipelining flood) must not keep
                    # every other connection waiting: let the scheduler run now and then.
                    self._unyielded = 0
                    await trio.lowlevel.checkpoint()
                # Where a cancel scope would have ended the phase: its deadline passed, or it
                # was interrupted (a cut). Checked on every read, not only on those that wait:
                # a peer that keeps data waiting (an upload sent flat out) must not get reads
                # past the phase's end.
                if self._phase_error is not None and self._phase_over():
                    raise self._phase_error()
                return data
        self._unyielded = 0
        phase_error = self._phase_error
        receive = self._receive_after_wait if self._direct else self.stream.receive_some
        if phase_error is None and self.read_timeout is None:
            return await receive(READ_SIZE)
        now = trio.current_time()
        read_deadline = math.inf if self.read_timeout is None else now + self.read_timeout
        if phase_error is not None and (self._interrupted or now >= self._phase_deadline):
            raise phase_error()
        by_phase = self._phase_deadline < read_deadline
        deadline = self._phase_deadline if by_phase else read_deadline
        if self._direct:
            if deadline == math.inf:
                return await receive(READ_SIZE)
            swept = self._sweeper
            if swept is None:
                swept = self._sweeper = sweeper()
            self._expired = False
            self.wait_deadline = deadline
            swept.watch(self)
            try:
                return await receive(READ_SIZE)
            except trio.ClosedResourceError:
                if not self._expired:
                    raise  # closed under us for another reason
            finally:
                self.wait_deadline = math.inf
                self.stream.read_expired = False  # for this wait only
                swept.unwatch(self)
        else:
            scope = trio.CancelScope(deadline=deadline)
            self._wait_scope = scope
            try:
                with scope:
                    return await self.stream.receive_some(READ_SIZE)
            finally:
                self._wait_scope = None
        if phase_error is not None and (by_phase or self._interrupted):
            raise phase_error()
        raise ReadTimeout(f"peer sent nothing for {self.read_timeout:g} s")

    def _check_head_size(self, event: h11.Request | h11.Response) -> None:
        """h11 bounds only a head still arriving; one that came whole in a read is sized here."""
        size = sum(len(name) + len(value) + 4 for name, value in event.headers)
        if isinstance(event, h11.Request):
            size += len(event.method) + len(event.target) + 12
        if size <= self.max_head_bytes:
            return
        message = f"request head of {size} bytes exceeds the {self.max_head_bytes}-byte limit"
        if self.http.our_role is h11.CLIENT:
            raise ConnectionLost(f"upstream {message.replace('request', 'response')}")
        raise ProtocolViolation(message, 431)

    async def send(self, event: h11.Event) -> None:
        if isinstance(event, h11.Request):
            self._sent_method = event.method
            self._nothing_yet = self._direct
        if self._strict_checks:
            event = as_h11(event)
        try:
            data = self.http.send(event)
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(f"cannot send {type(event).__name__}: {exc}") from exc
        if data:
            await self._write(data)

    async def _write(self, data: bytes) -> None:
        """Write bytes out; a transport failure is the one error callers catch."""
        try:
            await self.stream.send_all(data)
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionLost(f"connection lost while writing: {exc!r}") from exc

    async def send_message(self, head: h11.Request | h11.Response, body: bytes) -> None:
        """Send a whole message — head, body and end — as one write (one TLS record, one
        system call): the common case of a small request or answer held whole."""
        if self._strict_checks:
            events: list[h11.Event] = [head]
            if body:
                events.append(h11.Data(data=body))
            events.append(h11.EndOfMessage())
            await self.send_many(events)
            return
        if type(head) is not ResponseHead:
            self._sent_method = head.method
            self._nothing_yet = self._direct
        try:
            data = self.http.send_message(head, body)
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(f"cannot send: {exc}") from exc
        await self._write(data)

    async def send_many(self, events: list[h11.Event]) -> None:
        """Send several events as one write: one TLS record and one syscall, not one each."""
        if events and isinstance(events[0], h11.Request):
            self._sent_method = events[0].method
            self._nothing_yet = self._direct
        if self._strict_checks:
            events = [as_h11(event) for event in events]
        try:
            send = self.http.send
            data = b"".join([send(event) or b"" for event in events])
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(f"cannot send: {exc}") from exc
        await self._write(data)

    @property
    def reusable(self) -> bool:
        """Both sides finished the exchange cleanly, neither asked to close, and — on a
        connection to an upstream — nothing at all is left over.

        A pooled upstream connection is shared by every caller, so any byte its server sent
        beyond the response just relayed would be read as the *next* caller's response (#15.1).
        It is reused only when h11 holds no unparsed byte and saw no EOF, and when the response
        was not one whose length comes from the request rather than the bytes (an answer to
        HEAD, a 204 or a 304): a server that writes a body there anyway (``do_HEAD = do_GET``)
        may do so a moment later, where no check could see it in time. The pool also checks the
        socket itself when the connection is released and when it is taken again.
        """
        if self.http.our_state is not h11.DONE or self.http.their_state is not h11.DONE:
            return False
        if getattr(self.stream, "broken", False):
            return False  # a write was cut half-way
        if self.http.our_role is h11.CLIENT:
            leftover, closed = self.http.trailing_data
            return not leftover and not closed and not self._bodyless_answer
        return True

    def start_next_cycle(self) -> None:
        self.http.start_next_cycle()
        self._sent_method = None
        self._bodyless_answer = False
        if self._wait_between_requests and not self.stream.buffered():
            self._nothing_yet = True

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await self.stream.aclose()
