"""Streaming one HTTP exchange from a downstream connection to an upstream one and back.

The request body and the response run in one nursery as two tasks and are cancelled together:
a server may answer before it has read the whole request, and an SSE response must reach the
caller event by event while the request side is still open. Nothing is buffered unless a caller
asks for it (a body to inspect, a JSON response to filter), and then only up to a limit.

Errors before the response head went downstream become an answer (502/504 JSON); after it, the
only honest thing left is to cut the downstream connection, so the caller sees a truncated body
rather than a well-formed lie.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import h11
import trio

from ..errors import SidecarError
from .connection import ConnectionLost, HttpConnection
from .headers import forwardable, framing_for
from .wire import END, InformationalHead, ResponseHead

Headers = list[tuple[bytes, bytes]]

SMALL_BODY = 64 * 1024  # bodies up to this size (by Content-Length) are moved whole
DRAIN_LIMIT = 1024 * 1024  # request body left unread by an early answer that we still drain
DRAIN_TIMEOUT = 5.0


class BodyTooLarge(SidecarError):
    code = "ERR_BODY_TOO_LARGE"
    http_status = 413


class BodyTimeout(SidecarError):
    """A request body that did not arrive whole within the listener's overall body deadline."""

    code = "ERR_BODY_TIMEOUT"
    http_status = 408


class UpstreamTimeout(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 504


class CallerExpired(SidecarError):
    """A streamed answer (or a streamed request body) outlived the certificate its caller
    (inbound) or its sender (outbound, the peer sidecar) was authenticated with, or that
    certificate's trust."""

    code = "ERR_PEER_SVID_EXPIRED"
    http_status = 403
    layer = "identity"


class CallerTokenExpired(SidecarError):
    """A streamed answer (or request body) outlived the bearer token its request was judged
    with (inbound)."""

    code = "token_expired"  # the bearer layer's own name for it
    http_status = 403
    layer = "bearer"


class StreamEnd(NamedTuple):
    """When a streamed answer or request body must end at the latest, and the error it ends
    with: the first of the caller's SVID notAfter and its bearer token's expiry (an SSE stream
    or an upload is one request that may last hours; the credentials it was judged with do
    not)."""

    at: float  # POSIX seconds
    error: Callable[[], SidecarError]


def stream_end(svid_not_after: float | None, token_expires: float | None = None):
    """The :class:`StreamEnd` of an answer to a caller holding these credentials, or None."""
    # (tuple.__new__: a NamedTuple's own __new__ is a Python call, and this runs per request)
    if token_expires is not None and (svid_not_after is None or token_expires < svid_not_after):
        return tuple.__new__(StreamEnd, (token_expires, _token_expired))
    if svid_not_after is not None:
        return tuple.__new__(StreamEnd, (svid_not_after, caller_expired))
    return None


class BodyTransform(Protocol):
    """Rewrites a response body. ``buffered`` transforms see the whole body at once (and may
    still fail before anything was sent); streaming ones are fed chunk by chunk."""

    buffered: bool

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


ResponsePlanner = Callable[[h11.Response], BodyTransform | None]


@dataclass
class ExchangeResult:
    status: int | None = None  # what the downstream was told
    head_sent: bool = False
    upstream_reusable: bool = False
    bytes_up: int = 0
    bytes_down: int = 0
    cut: str | None = None  # why the answer stopped after its head left ("code: message")

    def cut_by(self, exc: BaseException) -> None:
        """Record why an answer whose head already left stopped, if nothing said so yet: our
        own errors by their code; a cancellation (the sidecar draining past its grace period,
        or stopping) and anything else (a bug) by what they are, so that the audit record of a
        truncated answer never reads as a complete one."""
        if not self.head_sent or self.cut is not None:
            return
        if isinstance(exc, SidecarError):
            self.cut = f"{exc.code}: {exc}"
        elif _is_cancellation(exc):
            self.cut = "ERR_CANCELLED: the sidecar stopped the exchange (draining or stopping)"
        else:
            self.cut = f"ERR_INTERNAL: {type(exc).__name__} (a bug: see the sidecar's log)"


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(trio.Cancelled)[0] is not None
    return isinstance(exc, trio.Cancelled)


async def read_whole_body(conn: HttpConnection, limit: int) -> bytes:
    """Read a message body up to ``limit`` bytes; more raises :class:`BodyTooLarge`.

    A body read whole is one the sidecar holds (to inspect, or to send in one write), so a
    caller trickling it must not hold it for long: beyond the per-read timeout, the whole body
    must arrive within the connection's ``body_timeout`` (:class:`BodyTimeout`, 408) — a body
    trickled for 40 s was otherwise judged by the policy of its first byte (#10.3).
    """
    if conn.body_timeout is None:
        return await _read_body(conn, limit)
    timeout = conn.body_timeout
    saved = conn.begin_phase(
        trio.current_time() + timeout,
        lambda: BodyTimeout(f"the request body did not arrive within {timeout:g} s"),
    )
    try:
        return await _read_body(conn, limit)
    finally:
        conn.end_phase(saved)


async def _read_body(conn: HttpConnection, limit: int) -> bytes:
    take_body = getattr(conn.http, "take_body", None)
    if take_body is not None:
        whole = take_body()  # all of it arrived with the head: no event-by-event walk
        if whole is not None:
            if len(whole) > limit:
                raise BodyTooLarge(f"body exceeds the {limit}-byte limit on this route")
            return whole
    parts: list[bytes] = []
    size = 0
    while True:
        event = await conn.next_event()
        kind = type(event)  # both engines yield exactly these types inside a body
        if kind is h11.Data:
            size += len(event.data)
            if size > limit:
                raise BodyTooLarge(f"body exceeds the {limit}-byte limit on this route")
            parts.append(bytes(event.data))
        elif kind is h11.EndOfMessage:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        elif kind is h11.ConnectionClosed:
            raise ConnectionLost("peer closed the connection before the body ended")
        else:  # pragma: no cover - h11 only yields the above inside a body
            raise ConnectionLost(f"unexpected {type(event).__name__} inside a body")


async def _copy_request_body(
    down: HttpConnection,
    up: HttpConnection,
    result: ExchangeResult,
    stream_end: StreamEnd | None,
) -> None:
    """Stream the caller's body upstream as it arrives. An upload may last as long as its
    caller keeps sending; like a streamed answer, it ends with the credentials it was judged
    with (``stream_end``): a read of it still waiting then fails with their error."""
    saved = None
    if stream_end is not None:
        deadline = trio.current_time() + (stream_end.at - time.time())  # on trio's clock
        saved = down.begin_phase(deadline, _ended_by(stream_end, up))
        up.upload_from = down
    try:
        while True:
            event = await down.next_event()
            if isinstance(event, h11.Data):
                result.bytes_up += len(event.data)
                await up.send(h11.Data(data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await up.send(END)
                return
            else:
                raise ConnectionLost("caller closed the connection before the request body ended")
    finally:
        if saved is not None:
            up.upload_from = None
            down.end_phase(saved)


def cut_exchange(
    up: HttpConnection, streaming: bool, error: Callable[[], SidecarError] | None = None
) -> None:
    """End the exchange under way on the upstream connection ``up``: a streamed answer stops
    now, an answer whose head is still awaited never starts (streamed or whole), and a request
    body still streaming stops too. A whole answer whose head already came is let finish.
    ``streaming``: what ``streams`` says of ``up``; ``error`` makes the error it ends with
    (default: the identity layer's, for a CA dropped from the bundle or a binding that moved
    an App ID)."""
    up.cut = error if error is not None else caller_expired
    if streaming:
        up.interrupt()
    if up.upload_from is not None:
        up.upload_from.interrupt()


def response_headers(response: h11.Response, transform: BodyTransform | None) -> Headers:
    headers = forwardable(response.headers, frozenset())
    if transform is None:
        # Keep the framing the app chose: h11 needs Content-Length to frame (and for HEAD).
        return headers + framing_for(response.headers)
    extra = list(getattr(transform, "extra_headers", ()))
    replaced = {name for name, _ in extra}
    return [(n, v) for n, v in headers if n not in replaced] + extra


async def _relay_answer(
    up: HttpConnection,
    down: HttpConnection,
    plan: ResponsePlanner | None,
    result: ExchangeResult,
    buffer_limit: int,
    head_timeout: float,
    stream_end: StreamEnd | None,
    streams: dict[HttpConnection, bool] | None,
) -> None:
    # The wait for the head is a phase of the upstream connection (no cancel scope of its own).
    saved = up.begin_phase(
        trio.current_time() + head_timeout,
        lambda: UpstreamTimeout(f"no response within {head_timeout:g} s"),
    )
    try:
        while True:
            event = await up.next_event()
            kind = type(event)  # h11's event classes are ABCs: the exact type first, for free
            if kind is ResponseHead:
                break
            if kind is InformationalHead or isinstance(event, h11.InformationalResponse):
                continue  # 100-continue was for us; the caller got its own
            break
    finally:
        up.end_phase(saved)
    if kind is not ResponseHead and not isinstance(event, h11.Response):
        raise ConnectionLost("upstream closed the connection without answering")
    if up.cut:
        # Marked while its head was awaited: the answer never starts, whether it would stream
        # or come whole (a tool result sent once a slow tool is done is as much the caller's
        # as an SSE one). Only an answer already on its way to the caller is let finish.
        raise up.cut()
    transform = plan(event) if plan is not None else None
    headers = response_headers(event, transform)
    if transform is not None and transform.buffered:
        raw = await read_whole_body(up, buffer_limit)
        body = transform.feed(raw) + transform.finish()
        if up.cut:
            raise up.cut()  # marked while the body was read: not a byte of it has left yet
        headers.append((b"content-length", str(len(body)).encode()))
        await _send_whole(down, event, headers, body, result)
        return
    if transform is None and _small(event.headers):
        # The common case (a JSON-RPC answer): one read, one write, no per-chunk round trips.
        body = await read_whole_body(up, SMALL_BODY)
        if up.cut:
            raise up.cut()  # marked while the body was read: not a byte of it has left yet
        await _send_whole(down, event, headers, body, result)
        return
    if stream_end is not None and time.time() >= stream_end.at:
        # The caller's SVID or token expired while the head was awaited: the stream never
        # starts (its first reads need not wait, so its phase alone would not stop it).
        raise stream_end.error()
    await _send_head(down, event, headers, result)
    saved = None
    if stream_end is not None:
        # A streamed answer (an SSE stream may stay open for hours) ends when the caller's
        # leaf or token does: a read of it still waiting then fails, and the caller's
        # connection is cut. A proxy that cuts it sooner (``up.cut``) interrupts this phase.
        deadline = trio.current_time() + (stream_end.at - time.time())  # on trio's clock
        saved = up.begin_phase(deadline, _ended_by(stream_end, up))
        if streams is not None:
            streams[up] = True  # from now on a cut interrupts this phase
    try:
        await _stream_body(up, down, transform, result)
    finally:
        if saved is not None:
            up.end_phase(saved)


def caller_expired() -> CallerExpired:
    return CallerExpired(
        "the peer's SVID expired, its CA left the trust bundle, or a binding moved its App ID,"
        " while the exchange was under way"
    )


def _token_expired() -> CallerTokenExpired:
    return CallerTokenExpired(
        "the bearer token the request was judged with expired while the exchange was streaming"
    )


def _ended_by(stream_end: StreamEnd, up: HttpConnection) -> Callable[[], SidecarError]:
    """The error of a phase bounded by ``stream_end``: its own at the expiry, the cut's when
    a proxy cut the exchange sooner (:func:`cut_exchange` marks ``up``)."""
    error = stream_end.error

    def ended() -> SidecarError:
        return up.cut() if up.cut else error()

    return ended


async def _stream_body(
    up: HttpConnection,
    down: HttpConnection,
    transform: BodyTransform | None,
    result: ExchangeResult,
) -> None:
    while True:
        event = await up.next_event()
        if isinstance(event, h11.Data):
            chunk = transform.feed(bytes(event.data)) if transform else event.data
            if chunk:
                result.bytes_down += len(chunk)
                await down.send(h11.Data(data=chunk))
        elif isinstance(event, h11.EndOfMessage):
            if transform is not None:
                tail = transform.finish()
                if tail:
                    await down.send(h11.Data(data=tail))
            await down.send(END)
            return
        else:
            raise ConnectionLost("upstream closed the connection in the middle of the body")


def _small(headers: Headers) -> bool:
    """A body framed by a Content-Length small enough to hold whole."""
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value) <= SMALL_BODY
            except ValueError:
                return False
    return False


def _response(response: h11.Response, headers: Headers) -> h11.Response:
    return ResponseHead(response.status_code, headers, response.reason)


async def _send_head(
    down: HttpConnection, response: h11.Response, headers: Headers, result: ExchangeResult
) -> None:
    await down.send(_response(response, headers))
    result.status = response.status_code
    result.head_sent = True


async def _send_whole(
    down: HttpConnection,
    response: h11.Response,
    headers: Headers,
    body: bytes,
    result: ExchangeResult,
) -> None:
    result.status = response.status_code
    result.head_sent = True
    await down.send_message(_response(response, headers), body)
    result.bytes_down += len(body)


async def _drain_request_body(down: HttpConnection) -> None:
    """Read and discard what is left of a request body the upstream answered without.

    A server may answer before reading the whole request (RFC 9112 allows it). Left unread, the
    body would make the caller's kept-alive connection unusable, and closing it right after a
    complete answer races the caller's next request on that connection. A reasonable remainder
    is drained so the connection stays good; a large or slow one costs the connection instead.
    """
    drained = 0
    with trio.move_on_after(DRAIN_TIMEOUT):
        while down.http.their_state is h11.SEND_BODY:
            event = await down.next_event()
            if isinstance(event, h11.Data):
                drained += len(event.data)
                if drained > DRAIN_LIMIT:
                    return
            elif not isinstance(event, h11.EndOfMessage):
                return


async def relay_exchange(
    result: ExchangeResult,
    down: HttpConnection,
    up: HttpConnection,
    request: h11.Request,
    *,
    body: bytes | None = None,
    plan: ResponsePlanner | None = None,
    buffer_limit: int = 4 * 1024 * 1024,
    head_timeout: float = 60.0,
    stream_end: StreamEnd | None = None,
    streams: dict[HttpConnection, bool] | None = None,
) -> None:
    """Send ``request`` upstream, stream the caller's body (or send ``body``, already read)
    and relay the answer downstream, recording progress in ``result`` as it goes so that a
    caller catching an error knows whether the response head already left. A streamed answer
    or request body is cut at ``stream_end`` (see :func:`stream_end`), or by
    :func:`cut_exchange`. A proxy that may cut exchanges lists ``up`` in ``streams`` (False)
    for the whole exchange, from before anything that may wait (a body read whole, a dial),
    with ``up.cut`` saying whether a cut came since the request was judged; the relay marks it
    True once the answer streams. An exchange cut before its request left sends nothing; after,
    an answer whose head had not come yet never starts, and a whole one on its way is let
    finish."""
    if body is None and _small(request.headers):
        body = await read_whole_body(down, SMALL_BODY)
    if up.cut:  # cut before the request left (while its body arrived): not a byte goes upstream
        raise up.cut()
    if body is not None:
        # Whole request in hand: head, body and end in one write, and no second task.
        await up.send_message(request, body)
        result.bytes_up += len(body)
        await _relay_answer(up, down, plan, result, buffer_limit, head_timeout, stream_end, streams)
        result.upstream_reusable = up.reusable
        return
    await up.send(request)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_copy_request_body, down, up, result, stream_end)
            await _relay_answer(
                up, down, plan, result, buffer_limit, head_timeout, stream_end, streams
            )
            # The answer is complete. If the request body is still flowing, the server did not
            # want it: stop copying (the upstream connection cannot be reused then).
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise first_error(group) from None
    if down.http.their_state is h11.SEND_BODY:
        with contextlib.suppress(SidecarError):
            await _drain_request_body(down)
    result.upstream_reusable = up.reusable


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The one error to report from the relay's two tasks.

    Either task failing ends the exchange, and the other is cancelled with it, so the group
    holds one real error (plus, at most, the other task's failure caused by the first). Callers
    handle plain :class:`SidecarError` values; anything that is not an ``Exception`` (a
    cancellation from outside, KeyboardInterrupt) keeps its group so trio sees it intact.
    """
    leaves = _leaves(group)
    if any(not isinstance(leaf, Exception) for leaf in leaves):
        return group
    for leaf in leaves:
        if isinstance(leaf, SidecarError):
            return leaf
    return leaves[0]


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out
