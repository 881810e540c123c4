"""The data plane's HTTP machinery over memory streams: relay, server loop, connection pool.

No sockets and no real time: streams come from ``trio.testing.memory_stream_pair`` (or the
in-memory listener in ``tests/_support/memnet.py``), and anything with a timeout runs on the
``autojump_clock``. Ordering is asserted with events, never with sleeps.
"""

from __future__ import annotations

import contextlib
import functools
import json

import h11
import pytest
import trio
import trio.testing

from sidecar.http.connection import ConnectionLost, HttpConnection, ProtocolViolation, ReadTimeout
from sidecar.http.relay import (
    SMALL_BODY,
    BodyTooLarge,
    ExchangeResult,
    UpstreamTimeout,
    first_error,
    read_whole_body,
    relay_exchange,
)
from sidecar.http.server import HttpServer, ServerLimits, send_simple_response
from sidecar.proxy.pool import ConnectionPool
from tests._support.memnet import MemoryListener, parse_response, read_until_eof

HOST = (b"host", b"test")


def conn_pair() -> tuple[HttpConnection, HttpConnection]:
    """(client, server) HTTP connections over one in-memory stream pair."""
    client, server = trio.testing.memory_stream_pair()
    return HttpConnection(client, h11.CLIENT), HttpConnection(server, h11.SERVER)


async def send_request(
    conn: HttpConnection,
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = b"",
) -> None:
    """Send a request; ``body=None`` leaves the body open for the caller to continue."""
    head = [HOST, *(headers or [])]
    if body and not any(n in (b"content-length", b"transfer-encoding") for n, _ in head):
        head.append((b"content-length", str(len(body)).encode()))
    await conn.send(h11.Request(method=method, target=target, headers=head))
    if body is None:
        return
    if body:
        await conn.send(h11.Data(data=body))
    await conn.send(h11.EndOfMessage())


async def read_response(conn: HttpConnection) -> tuple[h11.Response, bytes]:
    head = await conn.next_event()
    assert isinstance(head, h11.Response), head
    body = await read_whole_body(conn, 1 << 20)
    return head, body


async def read_request(conn: HttpConnection) -> h11.Request:
    event = await conn.next_event()
    assert isinstance(event, h11.Request), event
    return event


# --- HttpConnection ---------------------------------------------------------------------------


async def test_read_timeout_raises_read_timeout(autojump_clock):
    client, server = conn_pair()
    server.read_timeout = 5
    with pytest.raises(ReadTimeout, match="5 s"):
        await server.next_event()
    assert trio.current_time() == pytest.approx(5)
    # A peer that does speak in time is read normally.
    await send_request(client)
    assert isinstance(await server.next_event(), h11.Request)


async def test_100_continue_sent_only_when_the_body_is_read():
    client, server = conn_pair()
    expect = [(b"expect", b"100-continue"), (b"content-length", b"2")]
    await send_request(client, b"POST", headers=expect, body=None)
    await read_request(server)
    # Nothing was read from the body yet: no 100 on the wire.
    assert client.http.their_state is h11.SEND_RESPONSE
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read_body():
            got.append(await read_whole_body(server, 10))

        nursery.start_soon(read_body)
        informational = await client.next_event()
        assert isinstance(informational, h11.InformationalResponse)
        assert informational.status_code == 100
        await client.send(h11.Data(data=b"ok"))
        await client.send(h11.EndOfMessage())
    assert got == [b"ok"]


async def test_peer_going_away_is_connection_lost():
    client, server = conn_pair()
    await client.stream.aclose()
    assert isinstance(await server.next_event(), h11.ConnectionClosed)
    await client.aclose()
    with pytest.raises(ConnectionLost):
        await server.send(h11.Response(status_code=200, headers=[]))


async def test_garbage_is_protocol_violation_with_h11s_status_hint():
    client, server = conn_pair()
    await client.stream.send_all(b"NOT HTTP\r\n\r\n")
    with pytest.raises(ProtocolViolation) as caught:
        await server.next_event()
    assert caught.value.http_status == 400


# --- read_whole_body --------------------------------------------------------------------------


async def test_read_whole_body_up_to_the_limit():
    client, server = conn_pair()
    await send_request(client, b"POST", body=b"x" * 10)
    await read_request(server)
    assert await read_whole_body(server, 10) == b"x" * 10


async def test_read_whole_body_over_the_limit():
    client, server = conn_pair()
    await send_request(client, b"POST", body=b"x" * 11)
    await read_request(server)
    with pytest.raises(BodyTooLarge) as caught:
        await read_whole_body(server, 10)
    assert caught.value.http_status == 413


async def test_read_whole_body_over_the_limit_across_chunks():
    client, server = conn_pair()
    await send_request(client, b"POST", headers=[(b"transfer-encoding", b"chunked")], body=None)
    for _ in range(3):
        await client.send(h11.Data(data=b"abcd"))
    await read_request(server)
    with pytest.raises(BodyTooLarge):
        await read_whole_body(server, 10)


# --- first_error ------------------------------------------------------------------------------


def test_first_error_prefers_our_errors_and_keeps_foreign_base_exceptions():
    lost = ConnectionLost("x")
    assert first_error(BaseExceptionGroup("g", [ValueError("v"), lost])) is lost
    assert first_error(ExceptionGroup("g", [ExceptionGroup("h", [lost])])) is lost
    value = ValueError("v")
    assert first_error(ExceptionGroup("g", [value])) is value
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), lost])
    assert first_error(group) is group


# --- relay_exchange ---------------------------------------------------------------------------


class Exchange:
    """caller ⇄ (down | sidecar | up) ⇄ app, each hop an in-memory HTTP connection."""

    def __init__(self) -> None:
        self.caller, self.down = conn_pair()
        self.up, self.app = conn_pair()
        self.result = ExchangeResult()

    async def relay(self, request: h11.Request, **kwargs) -> None:
        await relay_exchange(self.result, self.down, self.up, request, **kwargs)


def upstream_request(method: bytes = b"GET", extra=()) -> h11.Request:
    return h11.Request(method=method, target=b"/app", headers=[HOST, *extra])


async def test_relay_streams_a_chunked_response_before_upstream_finishes():
    ex = Exchange()
    first_chunk_seen = trio.Event()
    app_finished = False
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        nonlocal app_finished
        await read_request(ex.app)
        assert isinstance(await ex.app.next_event(), h11.EndOfMessage)
        await ex.app.send(
            h11.Response(status_code=200, headers=[(b"content-type", b"text/event-stream")])
        )
        await ex.app.send(h11.Data(data=b"data: 1\n\n"))
        await first_chunk_seen.wait()  # the caller already has chunk 1
        await ex.app.send(h11.Data(data=b"data: 2\n\n"))
        await ex.app.send(h11.EndOfMessage())
        app_finished = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        nursery.start_soon(ex.relay, upstream_request())
        head = await ex.caller.next_event()
        assert isinstance(head, h11.Response)
        assert (b"transfer-encoding", b"chunked") in head.headers
        chunk = await ex.caller.next_event()
        assert isinstance(chunk, h11.Data)
        assert chunk.data == b"data: 1\n\n"
        assert not app_finished
        assert ex.result.head_sent
        first_chunk_seen.set()
        assert await read_whole_body(ex.caller, 100) == b"data: 2\n\n"
    assert app_finished
    assert ex.result.status == 200
    assert ex.result.bytes_down == 18
    assert ex.result.upstream_reusable


class Shout:
    """A buffered transform: sees the whole body, may change its length."""

    buffered = True

    def __init__(self) -> None:
        self.fed: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        self.fed.append(chunk)
        return chunk.upper()

    def finish(self) -> bytes:
        return b"!!"


async def test_buffered_transform_rewrites_body_and_sets_content_length():
    ex = Exchange()
    transform = Shout()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        # Chunked upstream, in two pieces: the transform must still see one body.
        await ex.app.send(h11.Response(status_code=201, headers=[(b"x-app", b"1")]))
        await ex.app.send(h11.Data(data=b"hel"))
        await ex.app.send(h11.Data(data=b"lo"))
        await ex.app.send(h11.EndOfMessage())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        nursery.start_soon(
            functools.partial(ex.relay, upstream_request(), plan=lambda r: transform)
        )
        head, body = await read_response(ex.caller)
    assert transform.fed == [b"hello"]
    assert body == b"HELLO!!"
    assert head.status_code == 201
    assert [v for n, v in head.headers if n == b"content-length"] == [b"7"]
    assert (b"transfer-encoding", b"chunked") not in head.headers
    assert (b"x-app", b"1") in head.headers


async def test_buffered_transform_limit_fails_before_the_head_is_sent():
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        await ex.app.send(h11.Response(status_code=200, headers=[(b"content-length", b"20")]))
        await ex.app.send(h11.Data(data=b"x" * 20))
        await ex.app.send(h11.EndOfMessage())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        with pytest.raises(BodyTooLarge):
            await ex.relay(upstream_request(), plan=lambda r: Shout(), buffer_limit=10)
    assert not ex.result.head_sent


async def test_no_transform_keeps_the_apps_content_length():
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        headers = [(b"content-length", b"5"), (b"connection", b"x-hop"), (b"x-hop", b"1")]
        await ex.app.send(h11.Response(status_code=200, headers=headers))
        await ex.app.send(h11.Data(data=b"hello"))
        await ex.app.send(h11.EndOfMessage())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        nursery.start_soon(ex.relay, upstream_request())
        head, body = await read_response(ex.caller)
    assert body == b"hello"
    assert [v for n, v in head.headers if n == b"content-length"] == [b"5"]
    assert not any(n == b"x-hop" for n, _ in head.headers)


async def test_request_body_is_streamed_upstream():
    ex = Exchange()
    app_saw_part1 = trio.Event()
    await send_request(ex.caller, b"POST", headers=[(b"transfer-encoding", b"chunked")], body=None)
    await ex.caller.send(h11.Data(data=b"part1"))
    request = await read_request(ex.down)
    assert request.method == b"POST"

    async def app():
        await read_request(ex.app)
        event = await ex.app.next_event()
        assert isinstance(event, h11.Data)
        assert event.data == b"part1"
        app_saw_part1.set()  # ...while the caller has not sent part 2 yet
        rest = await read_whole_body(ex.app, 100)
        assert rest == b"part2"
        await send_simple_response(ex.app, 200, b"got 10", b"text/plain")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        nursery.start_soon(
            ex.relay, upstream_request(b"POST", [(b"transfer-encoding", b"chunked")])
        )
        await app_saw_part1.wait()
        await ex.caller.send(h11.Data(data=b"part2"))
        await ex.caller.send(h11.EndOfMessage())
        head, body = await read_response(ex.caller)
    assert (head.status_code, body) == (200, b"got 10")
    assert ex.result.bytes_up == 10


async def test_prebuffered_body_is_sent_as_given():
    ex = Exchange()
    await send_request(ex.caller, b"POST", body=b"abc")
    await read_request(ex.down)
    assert await read_whole_body(ex.down, 10) == b"abc"

    async def app():
        await read_request(ex.app)
        assert await read_whole_body(ex.app, 10) == b"abc"
        await send_simple_response(ex.app, 204, b"")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        relay = functools.partial(
            ex.relay, upstream_request(b"POST", [(b"content-length", b"3")]), body=b"abc"
        )
        nursery.start_soon(relay)
        head, _ = await read_response(ex.caller)
    assert head.status_code == 204
    assert ex.result.bytes_up == 3


async def test_upstream_silence_is_upstream_timeout(autojump_clock):
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)
    with pytest.raises(UpstreamTimeout) as caught:
        await ex.relay(upstream_request(), head_timeout=7)
    assert caught.value.http_status == 504
    assert trio.current_time() == pytest.approx(7)
    assert not ex.result.head_sent


BIG = str(SMALL_BODY + 1).encode()


async def test_a_small_answer_cut_short_is_never_half_delivered():
    """Small bodies are read whole before the head goes out: a truncated one becomes an error
    the proxy can still answer (502), not a 200 with half a body."""
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        await ex.app.send(h11.Response(status_code=200, headers=[(b"content-length", b"10")]))
        await ex.app.send(h11.Data(data=b"abc"))
        await ex.app.stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        with pytest.raises(ConnectionLost):
            await ex.relay(upstream_request())
    assert not ex.result.head_sent
    assert ex.result.status is None


async def test_upstream_closing_mid_body_fails_after_head_was_sent():
    # What happens today, whatever the exception class: the exchange fails, the head already
    # left (so the caller must be cut off, not answered), and the caller saw only what the app
    # sent.
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        # Larger than the relay's whole-body fast path, so the head streams out first.
        await ex.app.send(h11.Response(status_code=200, headers=[(b"content-length", BIG)]))
        await ex.app.send(h11.Data(data=b"abc"))
        await ex.app.stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        with pytest.raises(ConnectionLost):  # the upstream's fault: a 502, never a 400
            await ex.relay(upstream_request())
    assert ex.result.head_sent
    assert ex.result.status == 200
    assert not ex.result.upstream_reusable
    head = await ex.caller.next_event()
    assert isinstance(head, h11.Response)
    chunk = await ex.caller.next_event()
    assert isinstance(chunk, h11.Data)
    assert chunk.data == b"abc"


async def test_upstream_closing_before_answering_is_connection_lost():
    ex = Exchange()
    await send_request(ex.caller)
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        await ex.app.stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        with pytest.raises(ConnectionLost):
            await ex.relay(upstream_request())
    assert not ex.result.head_sent


async def test_caller_closing_mid_request_body_is_connection_lost():
    ex = Exchange()
    await send_request(ex.caller, b"POST", headers=[(b"transfer-encoding", b"chunked")], body=None)
    await ex.caller.send(h11.Data(data=b"part"))
    await read_request(ex.down)

    async def app():
        await read_request(ex.app)
        await ex.app.next_event()
        await ex.caller.stream.aclose()  # the caller gives up mid-body

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        with pytest.raises((ConnectionLost, ProtocolViolation)):
            await ex.relay(upstream_request(b"POST", [(b"transfer-encoding", b"chunked")]))
    assert not ex.result.head_sent


# --- HttpServer -------------------------------------------------------------------------------


class App:
    """Handler: ``/block`` waits for ``release``; ``/boom`` raises; anything else echoes."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.blocked = trio.Event()
        self.served: list[bytes] = []

    async def __call__(self, conn, request, info) -> None:
        if request.target == b"/boom":
            raise RuntimeError("a bug in a handler")
        body = await read_whole_body(conn, 1024)
        if request.target == b"/block":
            self.blocked.set()
            await self.release.wait()
        self.served.append(request.target)
        await send_simple_response(conn, 200, b"echo:" + body, b"text/plain")


class Served:
    def __init__(self, server: HttpServer, listener: MemoryListener, nursery) -> None:
        self.server, self.listener, self.nursery = server, listener, nursery

    async def client(self) -> HttpConnection:
        return HttpConnection(await self.listener.connect(), h11.CLIENT)

    async def get(self, target: bytes = b"/", body: bytes = b"") -> tuple[h11.Response, bytes]:
        conn = await self.client()
        await send_request(conn, b"POST" if body else b"GET", target, body=body)
        return await read_response(conn)

    async def raw(self, data: bytes) -> bytes:
        stream = await self.listener.connect()
        await stream.send_all(data)
        return await read_until_eof(stream)


@pytest.fixture
async def serve(nursery):
    """Start an ``HttpServer`` on a memory listener; cancelled when the test ends."""

    async def start(handler, **limits) -> Served:
        listener = MemoryListener()
        server = HttpServer("test", handler, ServerLimits(**limits))
        await nursery.start(server.serve, [listener])
        return Served(server, listener, nursery)

    return start


async def test_server_serves_keep_alive_requests(serve, autojump_clock):
    app = App()
    served = await serve(app)
    conn = await served.client()
    for n in range(3):
        await send_request(conn, b"POST", b"/k", body=str(n).encode())
        head, body = await read_response(conn)
        assert (head.status_code, body) == (200, f"echo:{n}".encode())
        conn.start_next_cycle()
    assert app.served == [b"/k"] * 3


async def test_slowloris_is_cut_off_while_others_are_served(serve, autojump_clock):
    served = await serve(App(), head_timeout=5, read_timeout=30)
    slow = await served.listener.connect()
    cut_off_at: list[float] = []
    fast_done_at: list[float] = []

    async def slowloris():
        start = trio.current_time()
        try:
            for byte in b"GET / HTTP/1.1\r\nhost: test\r\nx-padding: aaaaaaaaaaaa\r\n\r\n":
                await slow.send_all(bytes([byte]))
                await trio.sleep(1)  # well inside read_timeout, far outside head_timeout
        except trio.BrokenResourceError:
            pass
        assert await read_until_eof(slow) == b""  # no answer: just closed
        cut_off_at.append(trio.current_time() - start)

    async def polite():
        await trio.sleep(2)  # arrives while the slow client is dribbling
        start = trio.current_time()
        head, body = await served.get(b"/fast")
        assert (head.status_code, body) == (200, b"echo:")
        fast_done_at.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slowloris)
        nursery.start_soon(polite)
    assert fast_done_at == [0]
    assert 5 <= cut_off_at[0] <= 6


async def test_complete_head_within_head_timeout_is_served(serve, autojump_clock):
    served = await serve(App(), head_timeout=5)
    stream = await served.listener.connect()
    request = b"GET /ok HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
    for byte in request:
        await stream.send_all(bytes([byte]))
        await trio.sleep(4 / len(request))
    head, body = parse_response(await read_until_eof(stream))
    assert (head.status_code, body) == (200, b"echo:")


def assert_json_error(raw: bytes, status: int) -> dict:
    head, body = parse_response(raw)
    assert head.status_code == status
    assert (b"content-type", b"application/json") in head.headers
    error = json.loads(body)
    assert error["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert error["message"].startswith("malformed request: ")
    return error


BIG_HEAD = b"GET / HTTP/1.1\r\nhost: test\r\nx-big: " + b"a" * 2048 + b"\r\n\r\n"


async def test_oversized_headers_get_431_json_and_the_server_survives(serve, autojump_clock):
    served = await serve(App(), max_head_bytes=1024)
    stream = await served.listener.connect()
    sent = 0
    with contextlib.suppress(trio.BrokenResourceError):  # answered and closed before the end
        while sent < len(BIG_HEAD):  # the head arrives over several reads
            await stream.send_all(BIG_HEAD[sent : sent + 512])
            sent += 512
            await trio.testing.wait_all_tasks_blocked()
    assert sent < len(BIG_HEAD)  # refused before the whole head arrived
    assert_json_error(await read_until_eof(stream), 431)
    # A head under the limit is fine, and the listener is still there.
    head, body = await served.get(b"/next")
    assert (head.status_code, body) == (200, b"echo:")


async def test_oversized_headers_in_one_read_get_431(serve, autojump_clock):
    served = await serve(App(), max_head_bytes=1024)
    assert_json_error(await served.raw(BIG_HEAD), 431)


@pytest.mark.parametrize(
    ("garbage", "status"),
    [
        (b"BLAH\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nhost: x\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # TLS to plain HTTP
        (b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n", 501),
    ],
)
async def test_malformed_request_gets_json_error_and_the_server_survives(
    serve, autojump_clock, garbage, status
):
    served = await serve(App())
    assert_json_error(await served.raw(garbage), status)
    head, _ = await served.get()
    assert head.status_code == 200


async def test_max_connections_is_enforced_against_busy_connections(serve, autojump_clock):
    app = App()
    served = await serve(app, max_connections=1)
    first = await served.client()
    await send_request(first, target=b"/block")
    await app.blocked.wait()
    assert served.server.active_connections == 1
    # Over the limit, and the only connection has a request in flight: closed at once.
    second = await served.listener.connect()
    assert await read_until_eof(second) == b""
    # The first connection is served normally...
    app.release.set()
    head, _ = await read_response(first)
    assert head.status_code == 200
    await first.aclose()
    while served.server.active_connections:
        await trio.sleep(0.01)
    # ...and once it is gone, a new one is accepted again.
    head, _ = await served.get(b"/third")
    assert head.status_code == 200


async def test_a_full_listener_cuts_an_idle_connection_for_a_newcomer(serve, autojump_clock):
    """#10.7: a peer holding every slot silent does not decide who is served."""
    served = await serve(App(), max_connections=2)
    idle = [await served.client() for _ in range(2)]
    await trio.testing.wait_all_tasks_blocked()
    head, _ = await served.get(b"/newcomer")
    assert head.status_code == 200
    assert served.server.established.evicted >= 1
    closed = 0
    for conn in idle:
        with trio.move_on_after(1):
            closed += await read_until_eof(conn.stream) == b""
    assert closed >= 1


async def test_drain_finishes_in_flight_and_closes_idle(serve, autojump_clock):
    app = App()
    served = await serve(app, drain_timeout=30)
    idle = await served.client()
    await send_request(idle, target=b"/idle")
    head, _ = await read_response(idle)
    assert head.status_code == 200
    busy = await served.client()
    await send_request(busy, target=b"/block")
    await app.blocked.wait()

    served.server.drain()
    # The idle keep-alive connection is closed without waiting for its timeout...
    with trio.fail_after(1):
        assert await read_until_eof(idle.stream) == b""
    # ...no new connection is accepted...
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(ConnectionRefusedError):
        await served.listener.connect()
    # ...and the in-flight request still gets its whole answer.
    app.release.set()
    head, body = await read_response(busy)
    assert (head.status_code, body) == (200, b"echo:")
    assert await read_until_eof(busy.stream) == b""
    with trio.fail_after(1):
        while served.server.active_connections:
            await trio.sleep(0.01)
    assert app.served == [b"/idle", b"/block"]


async def test_drain_cancels_stragglers_after_the_grace_period(serve, autojump_clock, nursery):
    app = App()
    served = await serve(app, drain_timeout=10)
    busy = await served.client()
    await send_request(busy, target=b"/block")
    await app.blocked.wait()
    start = trio.current_time()
    served.server.drain()
    assert await read_until_eof(busy.stream) == b""
    assert 10 <= trio.current_time() - start <= 11
    assert app.served == []


async def test_a_crashing_handler_does_not_kill_the_server(serve, autojump_clock):
    served = await serve(App())
    conn = await served.client()
    await send_request(conn, target=b"/boom")
    assert await read_until_eof(conn.stream) == b""  # that connection is lost...
    head, body = await served.get(b"/after", b"x")  # ...the listener is not
    assert (head.status_code, body) == (200, b"echo:x")
    assert served.server.active_connections <= 1


async def test_keepalive_timeout_closes_idle_connections(serve, autojump_clock):
    served = await serve(App(), keepalive_timeout=20)
    conn = await served.client()
    await send_request(conn)
    await read_response(conn)
    start = trio.current_time()
    assert await read_until_eof(conn.stream) == b""
    assert 20 <= trio.current_time() - start <= 21


# --- ConnectionPool ---------------------------------------------------------------------------


class Upstream:
    """Dials in-memory connections and keeps the app's end of each."""

    def __init__(self) -> None:
        self.app_ends: list[HttpConnection] = []
        self.dialled: list[object] = []

    async def connect(self, key) -> HttpConnection:
        self.dialled.append(key)
        client, app = conn_pair()
        self.app_ends.append(app)
        return client


async def one_exchange(conn: HttpConnection, app: HttpConnection) -> None:
    """A complete GET → 200 exchange, leaving ``conn`` reusable."""
    await send_request(conn)
    await read_request(app)
    await app.next_event()
    await send_simple_response(app, 200, b"")
    await read_response(conn)
    app.start_next_cycle()
    assert conn.reusable


@pytest.fixture
async def pool_parts(nursery):
    upstream = Upstream()
    generation = [0]
    pool = ConnectionPool(
        nursery, upstream.connect, generation=lambda: generation[0], idle_timeout=30
    )
    yield pool, upstream, generation
    await pool.aclose()


async def test_pool_reuses_a_healthy_parked_connection(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.testing.wait_all_tasks_blocked()
    again = await pool.acquire("app")
    assert again is conn
    assert pool.opened == 1
    # The watcher let go of the stream: the connection still works.
    await one_exchange(again, upstream.app_ends[0])


async def test_pool_keys_are_separate(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("a")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("a", conn)
    other = await pool.acquire("b")
    assert other is not conn
    assert upstream.dialled == ["a", "b"]


async def test_pool_drops_a_parked_connection_the_peer_closed(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.testing.wait_all_tasks_blocked()
    await upstream.app_ends[0].stream.aclose()  # the server times the keep-alive out
    await trio.testing.wait_all_tasks_blocked()
    fresh = await pool.acquire("app")
    assert fresh is not conn
    assert pool.opened == 2
    assert len(upstream.dialled) == 2
    await one_exchange(fresh, upstream.app_ends[1])


async def test_pool_drops_a_connection_closed_just_before_acquire(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.testing.wait_all_tasks_blocked()
    # Closed, and acquired with no chance for the watcher to run in between.
    upstream.app_ends[0].stream.send_stream.close()
    fresh = await pool.acquire("app")
    assert fresh is not conn
    assert pool.opened == 2


async def test_pool_drops_a_parked_connection_that_speaks_out_of_turn(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.testing.wait_all_tasks_blocked()
    await upstream.app_ends[0].stream.send_all(b"HTTP/1.1 200 OK\r\n")
    await trio.testing.wait_all_tasks_blocked()
    assert await pool.acquire("app") is not conn
    assert pool.opened == 2


async def test_pool_idle_timeout(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.sleep(29)
    assert await pool.acquire("app") is conn
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    await trio.sleep(31)
    assert await pool.acquire("app") is not conn
    assert pool.opened == 2
    # The stale one was closed, not leaked.
    assert isinstance(await upstream.app_ends[0].next_event(), h11.ConnectionClosed)


async def test_pool_generation_change_dials_a_new_connection(pool_parts, autojump_clock):
    pool, upstream, generation = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    pool.release("app", conn)
    generation[0] = 1  # the SVID rotated
    fresh = await pool.acquire("app")
    assert fresh is not conn
    assert pool.opened == 2
    # The old-generation connection is closed, not handed to anyone.
    assert isinstance(await upstream.app_ends[0].next_event(), h11.ConnectionClosed)
    # Same generation again: reuse.
    await one_exchange(fresh, upstream.app_ends[1])
    pool.release("app", fresh)
    assert await pool.acquire("app") is fresh


async def test_pool_does_not_park_a_connection_from_an_old_generation(pool_parts, autojump_clock):
    pool, upstream, generation = pool_parts
    conn = await pool.acquire("app")
    await one_exchange(conn, upstream.app_ends[0])
    generation[0] = 1  # rotated while the exchange ran
    pool.release("app", conn)
    assert isinstance(await upstream.app_ends[0].next_event(), h11.ConnectionClosed)
    assert await pool.acquire("app") is not conn


async def test_pool_does_not_park_an_unfinished_connection(pool_parts, autojump_clock):
    pool, upstream, _ = pool_parts
    conn = await pool.acquire("app")
    await send_request(conn)  # no response yet
    pool.release("app", conn)
    await read_request(upstream.app_ends[0])
    await upstream.app_ends[0].next_event()
    assert isinstance(await upstream.app_ends[0].next_event(), h11.ConnectionClosed)
    assert await pool.acquire("app") is not conn
    assert pool.opened == 2


async def test_an_early_answer_still_leaves_the_callers_connection_reusable():
    """Regression (found by the bench): an app that answers before reading a streamed request
    body left the caller's kept-alive connection half-read; the sidecar closed it under a pool
    that thought it good, and the next request on it failed. The rest is now drained."""
    ex = Exchange()
    chunked = [(b"transfer-encoding", b"chunked")]
    await send_request(ex.caller, b"POST", headers=chunked, body=None)
    request = await read_request(ex.down)
    answered = trio.Event()

    async def caller_body():
        await ex.caller.send(h11.Data(data=b"first part"))
        await answered.wait()  # the rest only arrives after the app has answered
        await ex.caller.send(h11.Data(data=b"second part"))
        await ex.caller.send(h11.EndOfMessage())

    async def app():
        await read_request(ex.app)  # answers without reading the body
        await ex.app.send(h11.Response(status_code=413, headers=[(b"content-length", b"0")]))
        await ex.app.send(h11.EndOfMessage())

    async def caller_reads():
        response = await ex.caller.next_event()
        assert response.status_code == 413
        assert isinstance(await ex.caller.next_event(), h11.EndOfMessage)
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        nursery.start_soon(caller_body)
        nursery.start_soon(caller_reads)
        await ex.relay(
            h11.Request(method=b"POST", target=b"/app", headers=[HOST, *chunked]),
        )
    assert request.method == b"POST"
    assert ex.down.reusable  # both sides DONE: the caller may send its next request here
    assert not ex.result.upstream_reusable  # the app's connection saw half a body: not reused
