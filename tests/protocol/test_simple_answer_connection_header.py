"""An answer the sidecar writes itself says ``Connection: close`` once, however many reasons it
has to close (a refusal that ends the connection, a body it did not read)."""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from sidecar.http.connection import HttpConnection
from sidecar.http.server import send_simple_response


async def _answer_head(extra, request: bytes, read_whole: bool = False) -> list[bytes]:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, h11.SERVER)
    await client.send_all(request)
    event = await conn.next_event()  # the head; the body is left unread unless read_whole
    while read_whole and type(event) is not h11.EndOfMessage:
        event = await conn.next_event()
    await send_simple_response(conn, 403, b"{}", extra_headers=extra)
    data = b""
    while b"\r\n\r\n" not in data:
        data += await client.receive_some(65536)
    return data.split(b"\r\n\r\n")[0].lower().split(b"\r\n")


@pytest.mark.parametrize(
    "extra", [[(b"connection", b"close")], None], ids=["refusal-closes", "unread-body-only"]
)
async def test_an_answer_before_the_body_says_connection_close_once(extra):
    request = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\n"
    lines = await _answer_head(extra, request)
    assert lines.count(b"connection: close") == 1
    assert sum(line.startswith(b"connection:") for line in lines) == 1


async def test_an_answer_after_the_whole_request_keeps_the_connection_unless_told():
    lines = await _answer_head(None, b"GET / HTTP/1.1\r\nhost: t\r\n\r\n", read_whole=True)
    assert not any(line.startswith(b"connection:") for line in lines)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /denied HTTP/1.1\r\nhost: t\r\n\r\n",
        b"POST /denied HTTP/1.1\r\nhost: t\r\ncontent-length: 5\r\n\r\nhello",
    ],
    ids=["bodiless", "body-arrived-whole"],
)
async def test_an_answer_to_a_request_that_arrived_whole_keeps_the_connection(request_bytes):
    # A denial right after the head (nothing read past it): the end of the request was already
    # in, so it is consumed and the next request on the connection is served, not cut.
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, h11.SERVER)
    await client.send_all(request_bytes + b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n")
    assert isinstance(await conn.next_event(), h11.Request)
    await send_simple_response(conn, 403, b"{}")
    assert conn.reusable
    conn.start_next_cycle()
    follow_up = await conn.next_event()
    assert isinstance(follow_up, h11.Request) and follow_up.target == b"/next"
    data = b""
    while b"\r\n\r\n" not in data:
        data += await client.receive_some(65536)
    assert b"connection:" not in data.lower()


@pytest.mark.parametrize("engine", [None, h11.Connection], ids=["llhttp", "h11"])
async def test_a_refused_head_request_gets_its_answer_head_without_a_body(engine):
    # A sidecar-written answer to HEAD (a denial, a 404) carries its body's length but not the
    # body: writing it anyway failed, and the caller saw the connection close with no answer.
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, h11.SERVER, engine=engine)
    await client.send_all(
        b"HEAD /denied HTTP/1.1\r\nhost: t\r\n\r\nGET /next HTTP/1.1\r\nhost: t\r\n\r\n"
    )
    assert isinstance(await conn.next_event(), h11.Request)
    if engine is not None:
        assert type(await conn.next_event()) is h11.EndOfMessage  # h11: read the end first
    await send_simple_response(conn, 403, b'{"errorCode": "x"}')
    data = b""
    while b"\r\n\r\n" not in data:
        data += await client.receive_some(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ") and b"content-length: 18" in head.lower()
    assert rest == b""
    assert conn.reusable
    conn.start_next_cycle()
    follow_up = await conn.next_event()
    assert isinstance(follow_up, h11.Request) and follow_up.target == b"/next"
