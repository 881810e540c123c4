"""#10.3 (I/O half): a body the sidecar reads whole has an overall deadline, not only per read.

On the autojump clock: a caller sends one byte every 4 s, under the 5 s per-read timeout, so
only the overall deadline can stop it.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from sidecar.http.connection import HttpConnection
from sidecar.http.relay import BodyTimeout, read_whole_body

HEAD = h11.Request(
    method=b"POST", target=b"/", headers=[(b"host", b"t"), (b"content-length", b"5")]
)


async def trickle(client: HttpConnection, data: bytes, every: float) -> None:
    await client.send(HEAD)
    for byte in data:
        await trio.sleep(every)
        await client.send(h11.Data(data=bytes([byte])))
    await client.send(h11.EndOfMessage())


def pair(body_timeout: float | None) -> tuple[HttpConnection, HttpConnection]:
    a, b = trio.testing.memory_stream_pair()
    client = HttpConnection(a, h11.CLIENT)
    server = HttpConnection(b, h11.SERVER, read_timeout=5, body_timeout=body_timeout)
    return client, server


async def test_a_trickled_body_is_cut_at_the_overall_deadline(autojump_clock):
    client, server = pair(body_timeout=10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, client, b"hello", 4)
        assert isinstance(await server.next_event(), h11.Request)
        with pytest.raises(BodyTimeout, match="did not arrive within 10 s") as caught:
            await read_whole_body(server, 1024)
        nursery.cancel_scope.cancel()
    assert caught.value.http_status == 408
    assert caught.value.code == "ERR_BODY_TIMEOUT"
    assert trio.current_time() == pytest.approx(10)


async def test_a_body_within_the_deadline_is_read_whole(autojump_clock):
    client, server = pair(body_timeout=30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, client, b"hello", 4)
        assert isinstance(await server.next_event(), h11.Request)
        assert await read_whole_body(server, 1024) == b"hello"


async def test_upstream_reads_have_no_overall_deadline_unless_set(autojump_clock):
    client, server = pair(body_timeout=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle, client, b"hello", 4)
        assert isinstance(await server.next_event(), h11.Request)
        assert await read_whole_body(server, 1024) == b"hello"
    assert trio.current_time() == pytest.approx(20)
