"""Keep-alive connections per upstream, parked with a watcher.

A parked keep-alive connection can be closed by its server at any moment; using it then would
fail a request that never reached anyone. So every parked connection gets a watcher task that
waits to read from it: if the server closes it (or, against the protocol, sends anything) while
it is parked, the watcher drops it. Taking a connection out of the pool cancels its watcher —
and ``acquire`` waits until the watcher has actually left its read (trio delivers a cancellation
only when the task next runs) before it hands the connection out, and skips it if the watcher
saw it close in the meantime.
Cancelling a read on an established ``SSLStream`` is safe (renegotiation is disabled).

Connections also remember the TLS material generation they were made with, so that after an
SVID rotation new requests go out on connections that present the new certificate.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import trio

from ..http.connection import HttpConnection


@dataclass(eq=False)
class _Parked:
    conn: HttpConnection
    generation: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    dead: bool = False


class ConnectionPool:
    def __init__(
        self,
        nursery: trio.Nursery,
        connect: Callable[[Hashable], Awaitable[HttpConnection]],
        *,
        generation: Callable[[], int] = lambda: 0,
        max_idle_per_key: int = 16,
        idle_timeout: float = 30.0,
    ) -> None:
        self._nursery = nursery
        self._connect = connect
        self._generation = generation
        self._max_idle = max_idle_per_key
        self._idle_timeout = idle_timeout
        self._idle: dict[Hashable, list[_Parked]] = defaultdict(list)
        self._generation_of: dict[int, int] = {}
        self.opened = 0  # connections dialled, for metrics and tests

    async def acquire(self, key: Hashable) -> HttpConnection:
        parked_list = self._idle.get(key)
        current = self._generation()
        while parked_list:
            parked = parked_list.pop()
            parked.scope.cancel()
            await parked.done.wait()
            if parked.dead:
                continue  # the watcher saw it close and is closing it
            if parked.generation == current:
                self._generation_of[id(parked.conn)] = parked.generation
                return parked.conn
            self._nursery.start_soon(parked.conn.aclose)
        conn = await self._connect(key)
        self.opened += 1
        self._generation_of[id(conn)] = current
        return conn

    def release(self, key: Hashable, conn: HttpConnection) -> None:
        """Park ``conn`` if it finished its exchange cleanly, else close it."""
        generation = self._generation_of.pop(id(conn), -1)
        parked_list = self._idle[key]
        if (
            not conn.reusable
            or generation != self._generation()
            or len(parked_list) >= self._max_idle
        ):
            self._nursery.start_soon(conn.aclose)
            return
        conn.start_next_cycle()
        parked = _Parked(conn, generation)
        parked_list.append(parked)
        self._nursery.start_soon(self._watch, key, parked)

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

    async def aclose(self) -> None:
        for parked_list in self._idle.values():
            for parked in parked_list:
                parked.scope.cancel()
                await parked.conn.aclose()
        self._idle.clear()
