"""In-memory networking for protocol tests: a listener that hands out memory streams.

``MemoryListener.connect()`` returns the client end of a fresh ``memory_stream_pair`` and queues
the server end for ``accept()``, so a server under test runs its real accept loop with no sockets.
Closing the listener makes later ``connect()`` calls fail the way a refused connection does.
"""

from __future__ import annotations

import math

import h11
import trio
import trio.testing


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel(math.inf)
        self.accepted = 0

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        try:
            self._send.send_nowait(server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ConnectionRefusedError("memory listener is closed") from None
        return client

    async def accept(self) -> trio.abc.Stream:
        try:
            stream = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("memory listener is closed") from None
        self.accepted += 1
        return stream

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything the peer sends until it closes its side."""
    parts = []
    while data := await stream.receive_some():
        parts.append(data)
    return b"".join(parts)


def parse_response(raw: bytes, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
    """Parse one raw HTTP/1.1 response (as sent to a ``method`` request) into head and body."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    head = conn.next_event()
    while isinstance(head, h11.InformationalResponse):
        head = conn.next_event()
    assert isinstance(head, h11.Response), head
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += bytes(event.data)
        else:
            assert isinstance(event, h11.EndOfMessage), event
            return head, body
