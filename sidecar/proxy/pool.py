"""Keep-alive connections per upstream, checked before reuse.

A parked keep-alive connection can be closed by its server at any moment; using it then would
fail a request that never reached anyone. A connection on a real socket is checked when it is
taken: if its socket is readable while parked — the server closed it, or, against the protocol,
sent something — it is dropped (a zero-timeout ``select``, no task and no wake-up per request);
one sweeper task per pool closes those idle for too long. Servers must not send TLS 1.3 session
tickets after the handshake for this to hold, and ours do not (``identity.server_context``).

Streams without a socket (in-memory ones, in tests) get a watcher task instead that waits to read
from the parked connection and drops it on EOF or data. Taking such a connection cancels its
watcher, and ``acquire`` waits until the watcher has left its read (trio delivers a cancellation
only when the task next runs) and skips the connection if the watcher saw it close. Cancelling a
read on an established ``SSLStream`` is safe (renegotiation is disabled).

Connections also remember the TLS material generation they were made with, so that after an
SVID rotation new requests go out on connections that present the new certificate.
"""

from __future__ import annotations

import contextlib
import select
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable

import trio

from ..http.connection import HttpConnection


class _Parked:
    """One parked connection. The watcher's cancel scope and done event exist only for a
    stream without a socket: a socket-backed one (every connection in production) is parked
    once per request, and needs neither (#11)."""

    __slots__ = ("conn", "dead", "done", "fd", "generation", "parked_at", "scope")

    def __init__(self, conn: HttpConnection, generation: int, fd: int | None = None) -> None:
        self.conn = conn
        self.generation = generation
        self.fd = fd  # the socket to check before reuse; None: a watcher task guards it
        self.dead = False
        self.parked_at = 0.0
        self.scope: trio.CancelScope | None = None
        self.done: trio.Event | None = None
        if fd is None:
            self.scope = trio.CancelScope()
            self.done = trio.Event()


class ConnectionPool:
    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Callable[[Hashable], Awaitable[HttpConnection]],
        *,
        generation: Callable[[], int] = lambda: 0,
        max_idle_per_key: int = 64,  # above typical agent concurrency: a handshake costs ms
        idle_timeout: float = 30.0,
        still_valid: Callable[[HttpConnection, Hashable], bool] | None = None,
    ) -> None:
        self._nursery = nursery
        self._connect = connect
        self._generation = generation
        self._max_idle = max_idle_per_key
        self._idle_timeout = idle_timeout
        self._idle: dict[Hashable, list[_Parked]] = defaultdict(list)
        self._generation_of: dict[int, int] = {}
        self._sweeping = False
        # Asked of a parked connection before it is reused (outbound: is the peer still the
        # identity its handshake proved, under the map and the clock of now?).
        self._still_valid = still_valid
        self.opened = 0  # connections dialled, for metrics and tests

    async def acquire(self, key: Hashable) -> HttpConnection:
        parked_list = self._idle.get(key)
        current = self._generation()
        while parked_list:
            parked = parked_list.pop()
            if parked.fd is not None:
                expired = trio.current_time() - parked.parked_at >= self._idle_timeout
                if expired or _readable(parked.fd):
                    self._nursery.start_soon(parked.conn.aclose)
                    continue
            else:
                parked.scope.cancel()
                await parked.done.wait()
                if parked.dead:
                    continue  # the watcher saw it close and is closing it
            if parked.generation == current and (
                self._still_valid is None or self._still_valid(parked.conn, key)
            ):
                self._generation_of[id(parked.conn)] = parked.generation
                return parked.conn
            self._nursery.start_soon(parked.conn.aclose)
        conn = await self._connect(key)
        self.opened += 1
        self._generation_of[id(conn)] = current
        return conn

    def connection(self, key: Hashable) -> _Borrowed:
        """``async with pool.connection(key) as conn``: released to the pool if the block ends
        normally (and the exchange left it reusable), discarded on any exception — an error,
        a cancellation — so no exit path leaks or re-parks a connection in an unknown state."""
        return _Borrowed(self, key)

    def release(self, key: Hashable, conn: HttpConnection) -> None:
        """Park ``conn`` if it finished its exchange cleanly with nothing left over, else close it.

        "Nothing left over" includes what TLS holds: bytes the server sent beyond its response
        that OpenSSL read and decrypted would otherwise be the next caller's response. Bytes
        (or an EOF) still in the socket are not looked for here: they stay there while the
        connection is parked, and :meth:`acquire` checks the socket before any reuse, which
        also sees what arrives meanwhile. One ``select`` per exchange, not two.
        """
        generation = self._generation_of.pop(id(conn), -1)
        parked_list = self._idle[key]
        if (
            not conn.reusable
            or generation != self._generation()
            or len(parked_list) >= self._max_idle
            or _tls_buffered(conn)
        ):
            self._nursery.start_soon(conn.aclose)
            return
        conn.start_next_cycle()
        parked = _Parked(conn, generation, fd=_socket_fd(conn))
        parked_list.append(parked)
        if parked.fd is None:
            self._nursery.start_soon(self._watch, key, parked)
            return
        parked.parked_at = trio.current_time()
        if not self._sweeping:
            self._sweeping = True
            self._nursery.start_soon(self._sweep)

    def discard(self, conn: HttpConnection) -> None:
        self._generation_of.pop(id(conn), None)
        self._nursery.start_soon(conn.aclose)

    async def _watch(self, key: Hashable, parked: _Parked) -> None:
        try:
            with parked.scope:
                with trio.move_on_after(self._idle_timeout):
                    # Any outcome of this read (EOF, bytes, an error) means: drop it.
                    with contextlib.suppress(Exception):
                        await parked.conn.stream.receive_some(1)
                parked.dead = True  # closed by the peer, spoke out of turn, or idle too long
        finally:
            parked.done.set()
        if parked.dead:
            parked_list = self._idle.get(key)
            if parked_list is not None and parked in parked_list:
                parked_list.remove(parked)
            await parked.conn.aclose()

    async def _sweep(self) -> None:
        """Close socket-backed connections parked longer than the idle timeout."""
        while True:
            await trio.sleep(self._idle_timeout / 2)
            now = trio.current_time()
            for parked_list in self._idle.values():
                stale = [
                    p
                    for p in parked_list
                    if p.fd is not None and now - p.parked_at >= self._idle_timeout
                ]
                for parked in stale:
                    parked_list.remove(parked)
                    self._nursery.start_soon(parked.conn.aclose)

    async def aclose(self) -> None:
        for parked_list in self._idle.values():
            for parked in parked_list:
                if parked.scope is not None:
                    parked.scope.cancel()
                await parked.conn.aclose()
        self._idle.clear()


class _Borrowed:
    """The context manager behind :meth:`ConnectionPool.connection` (a plain class: cheaper
    per request than ``contextlib.asynccontextmanager``)."""

    __slots__ = ("_conn", "_key", "_pool")

    def __init__(self, pool: ConnectionPool, key: Hashable) -> None:
        self._pool = pool
        self._key = key
        self._conn: HttpConnection | None = None

    async def __aenter__(self) -> HttpConnection:
        self._conn = await self._pool.acquire(self._key)
        return self._conn

    async def __aexit__(self, exc_type, exc, tb) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if exc_type is None:
            self._pool.release(self._key, conn)
        else:
            self._pool.discard(conn)


def _socket_fd(conn: HttpConnection) -> int | None:
    """The file descriptor under a plain or TLS trio stream, if there is one."""
    fd = getattr(conn.stream, "fd", None)  # a socket driven directly knows its own
    if fd is not None:
        return fd
    stream = getattr(conn.stream, "transport_stream", conn.stream)
    sock = getattr(stream, "socket", None)
    try:
        return sock.fileno() if sock is not None else None
    except (AttributeError, OSError):
        return None


def _tls_buffered(conn: HttpConnection) -> bool:
    """True if a TLS stream holds bytes it has received but nobody has read: decrypted ones in
    the SSL object, or encrypted ones in its incoming buffer. (trio keeps both private; a
    stream without them has nothing buffered below h11.)"""
    stream = conn.stream
    buffered = getattr(stream, "buffered", None)
    if buffered is not None:
        return buffered()
    ssl_object = getattr(stream, "_ssl_object", None)
    incoming = getattr(stream, "_incoming", None)
    try:
        return bool(
            (ssl_object is not None and ssl_object.pending())
            or (incoming is not None and incoming.pending)
        )
    except (AttributeError, ValueError, OSError):
        return True


def _readable(fd: int) -> bool:
    """True if the parked connection's socket has anything to read: EOF, an alert, stray bytes."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
