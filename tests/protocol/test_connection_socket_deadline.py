"""Deadlines of reads waiting on a real socket, kept by the run's sweeper (no cancel scope per
read): they end exactly as the phase-deadline tests over memory streams do, and leave the socket
usable for the answer; the sweeper sleeps rather than ticks. Autojump clock, over socketpairs.
"""

from __future__ import annotations

import socket

import h11
import pytest
import trio

from sidecar.errors import SidecarError
from sidecar.http.connection import HttpConnection, IdleTimeout, ReadTimeout
from sidecar.http.deadlines import sweeper
from sidecar.http.socket_stream import DirectStream


class PhaseOver(SidecarError):
    code = "ERR_TEST_PHASE"


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    yield ours, theirs
    theirs.close()


def server_conn(sock: socket.socket, read_timeout: float | None = 5) -> HttpConnection:
    conn = HttpConnection(DirectStream(sock), h11.SERVER, read_timeout=read_timeout)
    assert conn._direct
    return conn


async def test_a_silent_peer_ends_in_a_read_timeout_at_its_deadline(pair, autojump_clock):
    conn = server_conn(pair[0], read_timeout=5)
    with pytest.raises(ReadTimeout):
        await conn.next_event()
    assert 5 <= trio.current_time() <= 5 + 0.01
    assert sweeper().watched == 0


async def test_an_earlier_phase_deadline_ends_in_the_phase_error(pair, autojump_clock):
    conn = server_conn(pair[0], read_timeout=5)
    conn.begin_phase(trio.current_time() + 2, lambda: PhaseOver("phase over"))
    with pytest.raises(PhaseOver):
        await conn.next_event()
    assert 2 <= trio.current_time() <= 2 + 0.01


async def test_bytes_arriving_before_the_deadline_are_read_and_nothing_expires(
    pair, autojump_clock
):
    ours, theirs = pair
    conn = server_conn(ours, read_timeout=5)
    request = b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 3\r\n\r\nabc"
    for _ in range(3):  # three requests, each trickled within the per-read timeout

        async def trickle() -> None:
            for byte in request:
                await trio.sleep(1)
                theirs.send(bytes([byte]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            event = await conn.next_event()
            assert event.method == b"POST"
            while type(event) is not h11.EndOfMessage:
                event = await conn.next_event()
        await conn.send(h11.Response(status_code=204, headers=[]))
        await conn.send(h11.EndOfMessage())
        conn.start_next_cycle()
        assert theirs.recv(1024).startswith(b"HTTP/1.1 204")


async def test_an_interruption_ends_a_waiting_read_at_once(pair, autojump_clock):
    conn = server_conn(pair[0], read_timeout=5)
    conn.begin_phase(trio.current_time() + 60, lambda: IdleTimeout("idle"))
    async with trio.open_nursery() as nursery:

        async def interrupt_later() -> None:
            await trio.sleep(1)
            conn.interrupt()

        nursery.start_soon(interrupt_later)
        with pytest.raises(IdleTimeout):
            await conn.next_event()
    assert trio.current_time() == pytest.approx(1)


async def test_the_socket_still_carries_the_answer_after_a_deadline(pair, autojump_clock):
    """A body deadline is answered 408 on the same connection: expiry wakes the read but
    leaves the socket open."""
    ours, theirs = pair
    conn = server_conn(ours, read_timeout=5)
    theirs.send(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 10\r\n\r\nab")
    assert (await conn.next_event()).method == b"POST"
    conn.begin_phase(trio.current_time() + 1, lambda: PhaseOver("body too slow"))
    with pytest.raises(PhaseOver):
        while True:
            await conn.next_event()
    closing = [(b"content-length", b"0"), (b"connection", b"close")]
    await conn.send(h11.Response(status_code=408, headers=closing))
    await conn.send(h11.EndOfMessage())
    await trio.lowlevel.wait_readable(theirs)
    assert theirs.recv(1024).startswith(b"HTTP/1.1 408")


async def test_a_read_without_any_deadline_is_not_watched(pair, autojump_clock):
    ours, theirs = pair
    conn = server_conn(ours, read_timeout=None)

    async def speak_late() -> None:
        await trio.sleep(100)
        assert sweeper().watched == 0
        theirs.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_late)
        assert (await conn.next_event()).method == b"GET"
    assert trio.current_time() == pytest.approx(100)


async def test_a_nearer_deadline_wakes_the_sleeping_sweeper_early(pair, autojump_clock):
    """The sweeper sleeps until the earliest deadline it knows (at most a second): a read that
    starts waiting with a nearer one moves that wake forward."""
    first, _ = pair
    second, other = socket.socketpair()
    try:
        slow = server_conn(first, read_timeout=50)
        quick = server_conn(second, read_timeout=0.3)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow.next_event)
            await trio.sleep(0.1)  # the sweeper is asleep until 1.0 by now
            with pytest.raises(ReadTimeout):
                await quick.next_event()
            assert trio.current_time() == pytest.approx(0.4)
            nursery.cancel_scope.cancel()
    finally:
        other.close()
        second.close()
