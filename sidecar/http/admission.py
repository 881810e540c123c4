"""Admission of connections, so that no peer crowds out the others (#10.7).

:class:`HandshakeAdmission` is the budget for unauthenticated connections (a TLS handshake not
finished, or, at the CA, finished without a certificate); :class:`EstablishedAdmission` shares
the established connections among authenticated peers.

A TCP connection costs its opener nothing and, until the handshake ends, proves nothing; if
pending handshakes shared the listener's connection cap with established callers, 1,100 idle
sockets locked every caller out. So pending handshakes get a budget of their own — smaller, with
a per-source share and a short deadline — and never take an established caller's place. When
the budget is full, a newcomer is not turned away: the *oldest* pending handshake of the same
source (or, if that source is within its share, of the source holding most) is cut instead. A
real peer finishes its handshake in milliseconds, so it survives any flood slower than the budget
refilling in that time, while a flood of idle sockets only ever evicts itself.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import trio


@dataclass
class HandshakeAdmission:
    max_pending: int = 128
    max_pending_per_source: int = 32
    timeout: float = 5.0
    _pending: dict[trio.CancelScope, str] = field(default_factory=dict)  # oldest first
    _per_source: Counter[str] = field(default_factory=Counter)
    evicted: int = 0  # handshakes cut to make room, for logs and tests

    def admit(self, source: str) -> trio.CancelScope:
        """A cancel scope to run this handshake in (with the handshake deadline), making room
        by cutting an older pending handshake if the budget is full. Pair with :meth:`done`."""
        if self._per_source[source] >= self.max_pending_per_source:
            self._evict_oldest(source)
        elif len(self._pending) >= self.max_pending:
            self._evict_oldest(self._per_source.most_common(1)[0][0])
        scope = trio.CancelScope(deadline=trio.current_time() + self.timeout)
        self._pending[scope] = source
        self._per_source[source] += 1
        return scope

    def done(self, scope: trio.CancelScope) -> None:
        """The handshake ended (any way): it no longer counts against the budget."""
        source = self._pending.pop(scope, None)
        if source is None:
            return
        self._per_source[source] -= 1
        if not self._per_source[source]:
            del self._per_source[source]

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _evict_oldest(self, source: str) -> None:
        for scope, owner in self._pending.items():
            if owner == source:
                self.done(scope)
                scope.cancel()
                self.evicted += 1
                return


class Interruptible(Protocol):
    def interrupt(self) -> None: ...


@dataclass(eq=False)
class Slot:
    """One established connection's place in an :class:`EstablishedAdmission`.

    ``idle`` is the connection while it waits for its next request head (anything with an
    ``interrupt()`` that ends that wait), or ``None`` while a request is in flight: only an idle
    connection may be cut to make room.
    """

    key: str
    idle: Interruptible | None = None
    evicted: bool = False


@dataclass
class EstablishedAdmission:
    """Shares established connections among peers (#10.7), so no one peer crowds out the rest.

    A peer is keyed by what authenticated it (its mTLS identity), or by its source address when
    nothing did. Each key has a share (``max_per_key``); all keys together have ``max_total``.
    A newcomer past either limit is not simply turned away, because then whoever holds most of
    the slots, silent, decides who is served: an *idle* connection (waiting for its next request
    head, nothing in flight) of the same key — or, for the total, of the key holding most — is
    cut instead. Only when every candidate is busy is the newcomer refused. A legitimate caller
    holds idle connections only between its own requests, which a cut costs one reconnect.
    """

    max_total: int
    max_per_key: int
    _slots: dict[Slot, None] = field(default_factory=dict)  # oldest first
    _per_key: Counter[str] = field(default_factory=Counter)
    evicted: int = 0  # idle connections cut to make room, for logs and tests

    def admit(self, key: str) -> Slot | None:
        """A slot for a new connection of ``key``, cutting an idle one if a limit is reached;
        ``None`` if no room can be made. Pair a slot with :meth:`release`."""
        if self._per_key[key] >= self.max_per_key:
            if not self._evict_idle([key]):
                return None
        elif len(self._slots) >= self.max_total:
            holders = [owner for owner, _ in self._per_key.most_common()]
            if not self._evict_idle(holders):
                return None
        slot = Slot(key)
        self._slots[slot] = None
        self._per_key[key] += 1
        return slot

    def release(self, slot: Slot) -> None:
        """The connection ended (any way): it no longer counts."""
        if slot not in self._slots:
            return  # already released (cut to make room)
        del self._slots[slot]
        self._per_key[slot.key] -= 1
        if not self._per_key[slot.key]:
            del self._per_key[slot.key]

    @property
    def established(self) -> int:
        return len(self._slots)

    def _evict_idle(self, keys: list[str]) -> bool:
        """Cut the oldest idle connection of the first key in ``keys`` that has one."""
        for key in keys:
            for slot in self._slots:
                if slot.key == key and slot.idle is not None:
                    slot.evicted = True
                    slot.idle.interrupt()
                    self.release(slot)
                    self.evicted += 1
                    return True
        return False
