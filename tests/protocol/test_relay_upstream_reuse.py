"""#15.1 at the protocol tier: when an upstream connection may go back to the shared pool.

Over memory streams: the upstream "server" writes raw bytes, so each test controls exactly what
is framed and what is left over. A connection is reusable only when its response was framed
unambiguously and nothing at all is buffered beyond it.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from sidecar.http.connection import ConnectionLost, HttpConnection
from sidecar.http.relay import read_whole_body

HOST = (b"host", b"test")


async def exchange(method: bytes, raw_answer: bytes) -> HttpConnection:
    """Send ``method /`` on a client connection; the server answers with ``raw_answer``."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = HttpConnection(client_stream, h11.CLIENT)
    await client.send_many([h11.Request(method=method, target=b"/", headers=[HOST]),
                            h11.EndOfMessage()])  # fmt: skip
    await server_stream.send_all(raw_answer)
    head = await client.next_event()
    assert isinstance(head, h11.Response)
    await read_whole_body(client, 1 << 16)
    return client


async def test_a_cleanly_framed_answer_leaves_the_connection_reusable():
    client = await exchange(b"GET", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    assert client.reusable


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\n\r\n"),
    ],
    ids=["head", "204", "304"],
)
async def test_an_answer_whose_length_the_server_could_contradict_is_never_reused(method, raw):
    # Even with nothing left over now, a body may follow a moment later (do_HEAD = do_GET).
    client = await exchange(method, raw)
    assert not client.reusable


@pytest.mark.parametrize(
    ("method", "raw"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nHTTP/1.1 200 OK\r\n"),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n{}"),
        (b"GET", b'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}{"forged": 1}'),
    ],
    ids=["body-after-head", "body-on-204", "short-content-length"],
)
async def test_bytes_beyond_the_answer_make_the_connection_unusable(method, raw):
    client = await exchange(method, raw)
    assert not client.reusable


async def test_a_stray_crlf_after_an_answer_cannot_become_the_next_answer():
    """llhttp skips empty lines between messages (RFC 9112 §2.2 allows it), so the one stray
    byte sequence it does not report as leftover cannot be read as a response either."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = HttpConnection(client_stream, h11.CLIENT)
    for body in (b"one", b"two"):
        await client.send_many([h11.Request(method=b"GET", target=b"/", headers=[HOST]),
                                h11.EndOfMessage()])  # fmt: skip
        await server_stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n" + body)
        if body == b"one":
            await server_stream.send_all(b"\r\n")
        head = await client.next_event()
        assert isinstance(head, h11.Response)
        assert await read_whole_body(client, 1 << 16) == body
        client.start_next_cycle()


async def test_an_answer_with_both_length_and_chunking_is_refused():
    raw = (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
           b"0\r\n\r\n")  # fmt: skip
    with pytest.raises(ConnectionLost, match="Content-Length together with Transfer-Encoding"):
        await exchange(b"GET", raw)


# --- pool.connection(key) ---------------------------------------------------------------------


async def test_pool_connection_releases_on_a_clean_exit_and_discards_on_any_error(nursery):
    from sidecar.proxy.pool import ConnectionPool

    dialled: list[HttpConnection] = []

    async def dial(_key) -> HttpConnection:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        conn = HttpConnection(client_stream, h11.CLIENT)
        conn.peer = server_stream  # keep the far end open
        dialled.append(conn)
        return conn

    async def one_exchange(conn: HttpConnection) -> None:
        await conn.send_many([h11.Request(method=b"GET", target=b"/", headers=[HOST]),
                              h11.EndOfMessage()])  # fmt: skip
        await conn.peer.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await conn.next_event()
        await conn.next_event()

    pool = ConnectionPool(nursery, dial)
    async with pool.connection("k") as first:
        await one_exchange(first)
    with pytest.raises(RuntimeError):
        async with pool.connection("k") as again:
            assert again is first  # released after a clean exchange: reused
            await one_exchange(again)
            raise RuntimeError("boom")  # ...but an error discards it, exchange or not
    with trio.CancelScope() as scope:
        async with pool.connection("k") as cancelled:
            assert cancelled is not first
            scope.cancel()
            await trio.sleep_forever()
    async with pool.connection("k") as fresh:
        assert fresh not in (first, cancelled)
    assert len(dialled) == 3


# --- the llhttp engine over many messages ----------------------------------------------------


async def test_many_kept_alive_answers_never_add_up_to_an_oversized_head():
    """The head limit counts one head as it arrives, not the bytes of earlier messages."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = HttpConnection(client_stream, h11.CLIENT, max_head_bytes=1024)
    body = b"x" * 3000
    for _ in range(20):
        await client.send_many([h11.Request(method=b"GET", target=b"/", headers=[HOST]),
                                h11.EndOfMessage()])  # fmt: skip
        await server_stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3000\r\n\r\n" + body[:10])
        head = await client.next_event()
        assert isinstance(head, h11.Response)
        await server_stream.send_all(body[10:])
        assert await read_whole_body(client, 1 << 16) == body
        assert client.reusable
        client.start_next_cycle()


async def test_a_request_pipelined_across_reads_is_served_in_order():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    server = HttpConnection(server_stream, h11.SERVER)
    first = b"GET /one HTTP/1.1\r\nhost: a\r\n\r\nGET /tw"
    await client_stream.send_all(first)
    event = await server.next_event()
    assert event.target == b"/one"
    assert isinstance(await server.next_event(), h11.EndOfMessage)
    await server.send_many([h11.Response(status_code=204, headers=[]), h11.EndOfMessage()])
    server.start_next_cycle()
    await client_stream.send_all(b"o HTTP/1.1\r\nhost: a\r\n\r\n")
    event = await server.next_event()
    assert event.target == b"/two"
