"""The exchanges a proxy has under way, so that a change of trust can cut them.

TLS checks a peer once, at the handshake, and the judge checks a request once. An exchange can
outlast both: an SSE answer, an upload, or a request whose body is still arriving when the
trust changes. Two changes must end what was judged under the old trust: a CA dropped from the
bundle (every exchange: the proxy cannot tell which peer came from it) and a binding that moves
an App ID (the exchanges whose peer the new identity map no longer makes the App they were
judged as). Each proxy lists an exchange here from the moment it holds the upstream connection
until the exchange ends; a change made between the request's arrival and its listing (a body
read whole takes a while) is applied when it is listed. The relay carries the cut out
(:func:`sidecar.http.relay.cut_exchange`): a streamed answer or body stops, one not yet
started never starts, a whole answer is let finish.
"""

from __future__ import annotations

from collections.abc import Callable

from ..http.connection import HttpConnection
from ..http.relay import cut_exchange


class LiveExchanges:
    """One proxy's exchanges under way, by upstream connection (the relay marks an entry True
    once its answer streams), and how many trust changes came so far."""

    __slots__ = ("_rechecks", "_retires", "_still_trusted", "streams")

    def __init__(self, still_trusted: Callable[[HttpConnection], bool]) -> None:
        # Whether the peer of the exchange on this upstream connection is still the App it was
        # judged as, under the identity map in force now.
        self._still_trusted = still_trusted
        self.streams: dict[HttpConnection, bool] = {}
        self._retires = 0
        self._rechecks = 0

    def mark(self) -> tuple[int, int]:
        """Taken when a request arrives, before it is judged: the changes it has seen."""
        return self._retires, self._rechecks

    def enter(self, up: HttpConnection, mark: tuple[int, int]) -> None:
        """List the exchange on ``up``, cut already if a change since ``mark`` reaches it."""
        retires, rechecks = mark
        up.cut = retires != self._retires or (
            rechecks != self._rechecks and not self._still_trusted(up)
        )
        self.streams[up] = False

    def leave(self, up: HttpConnection) -> None:
        del self.streams[up]

    def retire_all(self) -> None:
        """A CA left the trust bundle: cut every exchange (and any listed later, see mark)."""
        self._retires += 1
        for up, streaming in list(self.streams.items()):
            cut_exchange(up, streaming)

    def recheck(self) -> None:
        """The identity map changed: cut the exchanges whose peer it no longer makes the App
        they were judged as."""
        self._rechecks += 1
        for up, streaming in list(self.streams.items()):
            if not self._still_trusted(up):
                cut_exchange(up, streaming)
