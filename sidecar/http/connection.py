"""A thin trio adapter around one ``h11.Connection``: bytes in and out, events to the caller.

All HTTP/1.1 parsing and framing is h11's; this class only moves bytes, bounds what a peer can
make us hold (h11's ``max_incomplete_event_size`` caps the request line plus headers), answers
``Expect: 100-continue`` when the body is actually wanted, and turns every transport failure into
one exception, :class:`ConnectionLost`, so callers have a single thing to catch.
"""

from __future__ import annotations

import contextlib
import ssl

import h11
import trio

from ..errors import SidecarError

READ_SIZE = 64 * 1024
DEFAULT_MAX_HEAD_BYTES = 16 * 1024


class ConnectionLost(SidecarError):
    """The peer went away, or the transport broke, in the middle of an exchange."""

    code = "ERR_CONNECTION_LOST"
    http_status = 502


class ReadTimeout(ConnectionLost):
    """The peer sent nothing for longer than the connection's read timeout."""

    code = "ERR_TIMEOUT"
    http_status = 408


class ProtocolViolation(SidecarError):
    """The peer broke HTTP/1.1; ``http_status`` is h11's hint (400, 431, …)."""

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
    ) -> None:
        self.stream = stream
        # Bounds each single read: a peer that stalls mid-message cannot hold us forever.
        # None for upstream reads, where an SSE stream may legitimately idle for long.
        self.read_timeout = read_timeout
        self.h11 = h11.Connection(role, max_incomplete_event_size=max_head_bytes)
        self.max_head_bytes = max_head_bytes

    async def next_event(self) -> h11.Event:
        """The next complete event; raises :class:`ConnectionLost` or :class:`ProtocolViolation`."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self.h11.our_role is h11.CLIENT:
                    # An upstream that breaks HTTP (or hangs up mid-message) is a bad gateway
                    # for our caller, not a malformed request from them.
                    raise ConnectionLost(f"upstream broke the protocol: {exc}") from exc
                raise ProtocolViolation(str(exc), exc.error_status_hint) from exc
            if isinstance(event, h11.Request | h11.Response):
                self._check_head_size(event)
            if event is not h11.NEED_DATA:
                return event
            if self.h11.they_are_waiting_for_100_continue:
                await self.send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                if self.read_timeout is None:
                    data = await self.stream.receive_some(READ_SIZE)
                else:
                    with trio.fail_after(self.read_timeout):
                        data = await self.stream.receive_some(READ_SIZE)
            except trio.TooSlowError:
                raise ReadTimeout(f"peer sent nothing for {self.read_timeout:g} s") from None
            except _TRANSPORT_ERRORS as exc:
                raise ConnectionLost(f"connection lost while reading: {exc!r}") from exc
            self.h11.receive_data(data)

    def _check_head_size(self, event: h11.Request | h11.Response) -> None:
        """h11 bounds only a head still arriving; one that came whole in a read is sized here."""
        size = sum(len(name) + len(value) + 4 for name, value in event.headers)
        if isinstance(event, h11.Request):
            size += len(event.method) + len(event.target) + 12
        if size <= self.max_head_bytes:
            return
        message = f"request head of {size} bytes exceeds the {self.max_head_bytes}-byte limit"
        if self.h11.our_role is h11.CLIENT:
            raise ConnectionLost(f"upstream {message.replace('request', 'response')}")
        raise ProtocolViolation(message, 431)

    async def send(self, event: h11.Event) -> None:
        try:
            data = self.h11.send(event)
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(f"cannot send {type(event).__name__}: {exc}") from exc
        if data:
            try:
                await self.stream.send_all(data)
            except _TRANSPORT_ERRORS as exc:
                raise ConnectionLost(f"connection lost while writing: {exc!r}") from exc

    async def send_many(self, events: list[h11.Event]) -> None:
        """Send several events as one write: one TLS record and one syscall, not one each."""
        try:
            data = b"".join(self.h11.send(event) or b"" for event in events)
        except h11.LocalProtocolError as exc:
            raise ConnectionLost(f"cannot send: {exc}") from exc
        try:
            await self.stream.send_all(data)
        except _TRANSPORT_ERRORS as exc:
            raise ConnectionLost(f"connection lost while writing: {exc!r}") from exc

    @property
    def reusable(self) -> bool:
        """Both sides finished the exchange cleanly and neither asked to close."""
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def start_next_cycle(self) -> None:
        self.h11.start_next_cycle()

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                await self.stream.aclose()
