"""A write waiting on a peer that takes none of our bytes ends at ``send_timeout`` (kept by the
run's deadline sweeper, as a waiting read's deadline is); a peer that keeps reading is written to
whole. Autojump clock, over socketpairs with small buffers."""

from __future__ import annotations

import socket

import h11
import pytest
import trio

from sidecar.http.connection import ConnectionLost, HttpConnection
from sidecar.http.deadlines import sweeper
from sidecar.http.socket_stream import DirectStream
from sidecar.http.wire import ResponseHead

BIG = b"x" * (4 << 20)  # far more than the socketpair's buffers hold


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    theirs.setblocking(False)
    yield ours, theirs
    theirs.close()


async def test_a_peer_that_never_reads_ends_the_write_at_the_send_timeout(pair, autojump_clock):
    stream = DirectStream(pair[0])
    stream.send_timeout = 5
    with pytest.raises(trio.BrokenResourceError, match="took none of our bytes for 5 s"):
        await stream.send_all(BIG)
    assert 5 <= trio.current_time() <= 5 + 0.01
    assert stream.broken  # part of it is out: never reused
    assert sweeper().watched == 0


async def test_the_server_connection_bounds_its_writes_by_its_read_timeout(pair, autojump_clock):
    ours, theirs = pair
    conn = HttpConnection(DirectStream(ours), h11.SERVER, read_timeout=3)
    theirs.send(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")  # ...and never reads the answer
    assert isinstance(await conn.next_event(), h11.Request)
    assert isinstance(await conn.next_event(), h11.EndOfMessage)
    head = ResponseHead(200, [(b"content-length", b"%d" % len(BIG))])
    with pytest.raises(ConnectionLost, match="took none of our bytes for 3 s"):
        await conn.send_message(head, BIG)
    assert 3 <= trio.current_time() <= 3 + 0.01
    assert not conn.reusable


async def test_twin_a_peer_that_keeps_reading_gets_every_byte(pair):
    ours, theirs = pair
    stream = DirectStream(ours)
    stream.send_timeout = 5
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(BIG):
            await trio.lowlevel.wait_readable(theirs)
            received.extend(theirs.recv(1 << 16))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await stream.send_all(BIG)
    assert bytes(received) == BIG
    assert not stream.broken
