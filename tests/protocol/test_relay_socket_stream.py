"""DirectStream: plain and TLS sockets driven by trio's I/O waits (sidecar/http/socket_stream).

Over ``socket.socketpair()`` (no network), with TLS contexts from the session's mesh CA: the
handshake and bulk transfer exercise want-read/want-write in both directions (small socket
buffers force partial writes), a write cancelled half-way leaves the stream ``broken``, and
closing wakes a task still waiting to read.
"""

from __future__ import annotations

import re
import socket
import ssl

import h11
import pytest
import trio
import trio.testing

from identity import AppIdentity, client_context, server_context
from sidecar.http.connection import YIELD_EVERY, HttpConnection, ReadTimeout
from sidecar.http.socket_stream import DirectStream
from sidecar.http.wire import ResponseHead
from tests._support.pki import utcnow


def _pair(small: bool = False) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    if small:
        for sock in (a, b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return a, b


def _tls_pair(mesh_ca, small: bool = False) -> tuple[DirectStream, DirectStream]:
    a, b = _pair(small)
    server_svid = mesh_ca.issue(AppIdentity("public", "default", "srv"), now=utcnow())
    client_svid = mesh_ca.issue(AppIdentity("public", "default", "cli"), now=utcnow())
    server = server_context(server_svid, mesh_ca.bundle).wrap_socket(
        a, server_side=True, do_handshake_on_connect=False
    )
    client = client_context(client_svid, mesh_ca.bundle).wrap_socket(
        b, server_side=False, server_hostname=None, do_handshake_on_connect=False
    )
    return DirectStream(server), DirectStream(client)


async def _receive_exactly(stream: DirectStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "EOF before the end"
        data += chunk
    return data


async def test_tls_handshake_and_a_large_transfer_both_ways(mesh_ca):
    server, client = _tls_pair(mesh_ca, small=True)
    payload = bytes(range(256)) * 4096  # 1 MiB: many records, many partial writes
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    assert client.getpeercert(binary_form=True)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, payload)
        got.append(await _receive_exactly(server, len(payload)))
    assert got == [payload]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.send_all, payload)
        got.append(await _receive_exactly(client, len(payload)))
    assert got[1] == payload
    await client.aclose()
    assert await server.receive_some(10) == b""  # close_notify (or EOF) ends the stream
    await server.aclose()


async def test_a_write_cancelled_half_way_leaves_the_stream_broken():
    a, b = _pair(small=True)
    stream, peer = DirectStream(a), DirectStream(b)
    with trio.move_on_after(0.2):
        await stream.send_all(b"x" * (8 << 20))  # nobody reads: it blocks part-way
    assert stream.broken
    await stream.aclose()
    await peer.aclose()


async def test_closing_wakes_a_task_waiting_to_read():
    a, b = _pair()
    stream, peer = DirectStream(a), DirectStream(b)
    woke: list[BaseException] = []

    async def read() -> None:
        try:
            await stream.receive_some(10)
        except trio.ClosedResourceError as exc:
            woke.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await stream.aclose()
    assert len(woke) == 1
    await peer.aclose()


async def test_plain_bytes_arrive_as_sent():
    a, b = _pair()
    stream, peer = DirectStream(a), DirectStream(b)
    await peer.send_all(b"hello")
    assert await stream.receive_some(100) == b"hello"
    await peer.aclose()
    assert await stream.receive_some(100) == b""
    await stream.aclose()


async def test_a_peer_that_always_has_more_bytes_does_not_starve_other_tasks():
    """Reads that find bytes waiting do not yield, except every YIELD_EVERY-th one."""
    a, b = _pair()
    conn = HttpConnection(DirectStream(a), h11.SERVER)
    conn._receive_nowait = lambda size: b"x"  # a peer whose bytes never run out
    ticks = 0

    async def other_task() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.sleep(0)
        before = ticks
        for _ in range(YIELD_EVERY * 4):
            assert await conn._receive() == b"x"
        assert ticks - before >= 3
        nursery.cancel_scope.cancel()
    a.close()
    b.close()


class _Cut(Exception):
    pass


@pytest.mark.parametrize("how", ["interrupted", "deadline passed"])
async def test_a_read_that_finds_bytes_waiting_still_ends_with_its_phase(how):
    """A peer that keeps bytes waiting (an upload sent flat out) gets no read past its phase's
    end: not one more, rather than up to YIELD_EVERY - 1 more until a read had to yield."""
    a, b = _pair()
    conn = HttpConnection(DirectStream(a), h11.SERVER)
    conn._receive_nowait = lambda size: b"x"  # a peer whose bytes never run out
    deadline = trio.current_time() + 3600
    saved = conn.begin_phase(deadline, lambda: _Cut(how))
    assert await conn._receive() == b"x"  # twin: within the phase, the bytes are read
    if how == "interrupted":
        conn.interrupt()  # a cut (a CA dropped, a grant revoked)
    else:
        conn._phase_deadline = trio.current_time()  # the caller's SVID just expired
    with pytest.raises(_Cut):
        await conn._receive()
    conn.end_phase(saved)
    assert await conn._receive() == b"x"  # the phase over: reads go on as before
    a.close()
    b.close()


async def _serve_in_order(conn: HttpConnection, count: int) -> list[bytes]:
    """Answer ``count`` requests one after another on ``conn``, as the server loop does."""
    served = []
    for _ in range(count):
        request = await conn.next_event()
        assert isinstance(request, h11.Request)
        while type(await conn.next_event()) is not h11.EndOfMessage:
            pass
        served.append(request.target)
        body = request.target
        head = ResponseHead(200, [(b"content-length", b"%d" % len(body))])
        await conn.send_message(head, body)
        assert conn.reusable
        conn.start_next_cycle()
    return served


async def test_requests_pipelined_over_tls_are_all_served_in_order(mesh_ca):
    """Between requests a TLS server connection waits before it reads (the next request cannot
    be there yet, unless the caller pipelines): requests that are already there — in the same
    TLS record as the one answered, or in records sent before any answer was read — are served
    at once, in order, none waiting for more bytes."""
    server, client = _tls_pair(mesh_ca)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    conn = HttpConnection(server, h11.SERVER)
    first_record = b"GET /a HTTP/1.1\r\nhost: t\r\n\r\nGET /b HTTP/1.1\r\nhost: t\r\n\r\n"
    await client.send_all(first_record)
    await client.send_all(b"POST /c HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nhi")
    await client.send_all(b"GET /d HTTP/1.1\r\nhost: t\r\n\r\n")
    with trio.fail_after(5):
        served = await _serve_in_order(conn, 4)
        answers = b""
        while not answers.endswith(b"/d"):
            answers += await client.receive_some(65536)
    assert served == [b"/a", b"/b", b"/c", b"/d"]
    assert re.findall(rb"HTTP/1.1 200 [^\r]*\r\n[^\r]*\r\n\r\n(/.)", answers) == served
    await client.aclose()
    await server.aclose()


async def _relay(src: socket.socket, dst: socket.socket, one_byte_at_a_time: list[bool]) -> None:
    """Copy ``src`` to ``dst``; a byte at a time (10 ms apart) while the flag is set."""
    while True:
        await trio.lowlevel.wait_readable(src)
        data = src.recv(65536)
        if not data:
            return
        step = 1 if one_byte_at_a_time[0] else len(data)
        for at in range(0, len(data), step):
            await trio.lowlevel.wait_writable(dst)
            dst.sendall(data[at : at + step])
            if one_byte_at_a_time[0]:
                await trio.sleep(0.01)


async def test_a_deadline_passing_while_a_trickled_tls_record_wakes_the_read_still_ends_it(
    mesh_ca,
):
    """The sweeper ends a read at its deadline with ``notify_closing``, which reaches only a
    task that is waiting. A peer trickling one TLS record keeps waking the read (each byte
    leaves the record incomplete, and the read waits again), so the sweeper can run while the
    read is awake; here it does, at a want-read after a byte arrived. The read must still end
    with its phase's error, not wait on for the rest of the record (a head trickled byte by
    byte outlived its 1 s deadline this way, now and then, under load)."""
    server_raw, server_peer = socket.socketpair()
    client_raw, client_peer = socket.socketpair()
    for sock in (server_peer, client_peer):
        sock.setblocking(False)
    identity = {name: AppIdentity("public", "default", name) for name in ("srv", "cli")}
    server_svid = mesh_ca.issue(identity["srv"], now=utcnow())
    client_svid = mesh_ca.issue(identity["cli"], now=utcnow())
    server = DirectStream(
        server_context(server_svid, mesh_ca.bundle).wrap_socket(
            server_raw, server_side=True, do_handshake_on_connect=False
        )
    )
    client = DirectStream(
        client_context(client_svid, mesh_ca.bundle).wrap_socket(
            client_raw, server_side=False, server_hostname=None, do_handshake_on_connect=False
        )
    )
    trickle = [False]
    conn = HttpConnection(server, h11.SERVER, read_timeout=30)
    real_recv, woken = server._recv, []

    def recv(size):
        try:
            return real_recv(size)
        except ssl.SSLWantReadError:
            if woken:  # awake after a byte: the sweeper runs now, while this task is not waiting
                conn.expire()
            woken.append(True)
            raise

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_relay, client_peer, server_peer, trickle)
            nursery.start_soon(_relay, server_peer, client_peer, [False])
            nursery.start_soon(server.do_handshake)
            await client.do_handshake()
            await trio.testing.wait_all_tasks_blocked()
            trickle[0] = True
            server._recv = recv
            await client.send_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")  # one record
            saved = conn.begin_phase(trio.current_time() + 30, lambda: ReadTimeout("head"))
            with pytest.raises(ReadTimeout):
                await conn.next_event()
            conn.end_phase(saved)
            nursery.cancel_scope.cancel()
    assert len(woken) >= 2  # it was woken by a byte, and ended there
    for sock in (server_peer, client_peer):
        sock.close()
    await client.aclose()
    await server.aclose()
