"""A connection's phase deadline: one deadline over a whole phase (a head to wait for, a body
read whole) that a waiting read combines with its per-read timeout in a single cancel scope.

It must end reads exactly as the nested cancel scopes it replaced did: the earlier deadline
wins and ends in its own error (the per-read one on a tie), a phase inside another keeps the
earlier deadline, and an interruption (a listener draining) ends a waiting read at once.
On the autojump clock, over memory streams.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from sidecar.errors import SidecarError
from sidecar.http.connection import HttpConnection, IdleTimeout, ReadTimeout


class PhaseOver(SidecarError):
    code = "ERR_TEST_PHASE"


class OuterPhaseOver(SidecarError):
    code = "ERR_TEST_OUTER_PHASE"


def server_conn(read_timeout: float | None = 5) -> tuple[trio.abc.Stream, HttpConnection]:
    client, server = trio.testing.memory_stream_pair()
    return client, HttpConnection(server, h11.SERVER, read_timeout=read_timeout)


async def test_a_phase_deadline_earlier_than_the_read_timeout_ends_in_the_phase_error(
    autojump_clock,
):
    _, conn = server_conn(read_timeout=5)
    saved = conn.begin_phase(trio.current_time() + 3, lambda: PhaseOver("phase over"))
    with pytest.raises(PhaseOver):
        await conn.next_event()
    conn.end_phase(saved)
    assert trio.current_time() == pytest.approx(3)


@pytest.mark.parametrize("phase_seconds", [30, 5], ids=["phase-later", "tie"])
async def test_a_read_timeout_not_later_than_the_phase_deadline_is_a_read_timeout(
    phase_seconds, autojump_clock
):
    """On a tie the per-read timeout wins, as the inner of two nested scopes did."""
    _, conn = server_conn(read_timeout=5)
    conn.begin_phase(trio.current_time() + phase_seconds, lambda: PhaseOver("phase over"))
    with pytest.raises(ReadTimeout):
        await conn.next_event()
    assert trio.current_time() == pytest.approx(5)


async def test_the_phase_deadline_spans_reads_that_each_arrive_in_time(autojump_clock):
    client, conn = server_conn(read_timeout=5)

    async def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\n":
            await trio.sleep(4)
            await client.send_all(bytes([byte]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        conn.begin_phase(trio.current_time() + 10, lambda: PhaseOver("phase over"))
        with pytest.raises(PhaseOver):
            await conn.next_event()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == pytest.approx(10)


async def test_an_inner_phase_keeps_the_outer_earlier_deadline_and_its_error(autojump_clock):
    _, conn = server_conn(read_timeout=None)
    outer = conn.begin_phase(trio.current_time() + 4, lambda: OuterPhaseOver("outer"))
    inner = conn.begin_phase(trio.current_time() + 9, lambda: PhaseOver("inner"))
    with pytest.raises(OuterPhaseOver):
        await conn.next_event()
    conn.end_phase(inner)
    conn.end_phase(outer)
    assert trio.current_time() == pytest.approx(4)


async def test_an_ended_phase_no_longer_bounds_reads(autojump_clock):
    client, conn = server_conn(read_timeout=None)
    conn.end_phase(conn.begin_phase(trio.current_time() + 1, lambda: PhaseOver("phase over")))

    async def speak_late() -> None:
        await trio.sleep(50)
        await client.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak_late)
        assert isinstance(await conn.next_event(), h11.Request)
    assert trio.current_time() == pytest.approx(50)


async def test_an_interruption_ends_a_waiting_read_at_once(autojump_clock):
    _, conn = server_conn(read_timeout=5)
    conn.begin_phase(trio.current_time() + 60, lambda: IdleTimeout("idle"))
    async with trio.open_nursery() as nursery:

        async def interrupt_later() -> None:
            await trio.sleep(1)
            conn.interrupt()

        nursery.start_soon(interrupt_later)
        with pytest.raises(IdleTimeout):
            await conn.next_event()
    assert trio.current_time() == pytest.approx(1)


async def test_an_interruption_before_the_read_stops_it_from_waiting(autojump_clock):
    _, conn = server_conn(read_timeout=5)
    saved = conn.begin_phase(trio.current_time() + 60, lambda: IdleTimeout("idle"))
    conn.interrupt()
    with pytest.raises(IdleTimeout):
        await conn.next_event()
    assert trio.current_time() == 0
    conn.end_phase(saved)  # the interruption ends with its phase: a later read waits again
    with pytest.raises(ReadTimeout):
        await conn.next_event()


async def test_bytes_already_there_are_read_whatever_the_phase(autojump_clock):
    """The twin of the cut-offs above: a head that is there is parsed, phase or not."""
    client, conn = server_conn(read_timeout=5)
    await client.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
    conn.begin_phase(trio.current_time() + 3, lambda: PhaseOver("phase over"))
    assert isinstance(await conn.next_event(), h11.Request)


class EndlessBody(trio.abc.Stream):
    """A peer whose bytes are always already there: a head announcing a huge body, then body
    bytes on every read, so reads never wait (the pipelining-flood shape)."""

    def __init__(self) -> None:
        self.head_sent = False

    def receive_nowait(self, max_bytes: int) -> bytes:
        if not self.head_sent:
            self.head_sent = True
            return b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 999999999\r\n\r\n"
        return b"x" * 1024

    async def receive_some(self, max_bytes=None) -> bytes:  # pragma: no cover - never waits
        raise AssertionError("a read that finds bytes waiting must not wait")

    async def send_all(self, data) -> None:  # pragma: no cover - nothing is sent
        raise AssertionError("nothing is sent")

    async def wait_send_all_might_not_block(self) -> None:  # pragma: no cover
        raise AssertionError("nothing is sent")

    async def aclose(self) -> None:  # pragma: no cover
        pass


async def test_a_connection_fed_without_pause_still_ends_its_phase_at_its_next_read(
    autojump_clock,
):
    """Reads that never wait enter no scope; the phase still ends at the next read (a cancel
    scope would have ended it only at the reader's next checkpoint: up to YIELD_EVERY - 1 more
    reads of a peer that keeps sending)."""
    conn = HttpConnection(EndlessBody(), h11.SERVER, read_timeout=5)
    assert isinstance(await conn.next_event(), h11.Request)
    conn.begin_phase(trio.current_time() + 60, lambda: PhaseOver("phase over"))
    conn.interrupt()
    chunks = 0
    with pytest.raises(PhaseOver):
        while True:
            assert isinstance(await conn.next_event(), h11.Data)
            chunks += 1
    assert chunks == 0  # not one more read once the phase was over
