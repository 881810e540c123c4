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
        (b"GET", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\r\n"),
    ],
    ids=["body-after-head", "body-on-204", "short-content-length", "one-stray-crlf"],
)
async def test_bytes_beyond_the_answer_make_the_connection_unusable(method, raw):
    client = await exchange(method, raw)
    assert not client.reusable


async def test_an_answer_with_both_length_and_chunking_is_refused():
    raw = (b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
           b"0\r\n\r\n")  # fmt: skip
    with pytest.raises(ConnectionLost, match="Content-Length together with Transfer-Encoding"):
        await exchange(b"GET", raw)
