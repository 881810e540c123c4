"""A budget for connections that have not finished their TLS handshake (#10.7).

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
