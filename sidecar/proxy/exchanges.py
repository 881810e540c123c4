"""The exchanges a proxy has under way, so that a change of trust or of policy can cut them.

TLS checks a peer once, at the handshake, and the judge checks a request once. An exchange can
outlast both: an SSE answer, an upload, or a request whose body is still arriving when the
change comes. Three changes must end what was judged before them:

* a CA dropped from the bundle: every exchange (the proxy cannot tell which peer came from it);
* a binding that moves an App ID: the exchanges whose peer the new identity map no longer makes
  the App they were judged as;
* a new policy: the exchanges it would refuse if their request arrived now (a revoked ACL
  grant or tool grant, a bearer layer added), judged again by the proxy's judge.

Each proxy lists an exchange here from the moment it holds the upstream connection until the
exchange ends; a change made between the request's arrival and its listing (a body read whole
takes a while) is applied when it is listed. The relay carries the cut out
(:func:`sidecar.http.relay.cut_exchange`): a streamed answer or body stops, an answer
not yet started never starts (streamed or whole), a whole answer on its way is let finish.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from ..errors import SidecarError
from ..http.connection import HttpConnection
from ..http.relay import caller_expired, cut_exchange
from ..policy import Decision

log = structlog.get_logger("trustmesh.exchanges")

# Judges an exchange's request again under the policy in force: None, or the refusal.
Rejudge = Callable[[], Decision | None]


class PolicyRevoked(SidecarError):
    """The policy applied while an exchange was under way refuses its request."""

    code = "ERR_POLICY_CHANGED"
    http_status = 403

    def __init__(self, message: str, layer: str = "internal") -> None:
        super().__init__(message)
        self.layer = layer  # the layer of the new policy that refuses it, for the record


class LiveExchanges:
    """One proxy's exchanges under way, by upstream connection (the relay marks an entry True
    once its answer streams), and how many changes came so far."""

    __slots__ = ("_policies", "_rechecks", "_rejudges", "_retires", "_still_trusted", "streams")

    def __init__(self, still_trusted: Callable[[HttpConnection], bool]) -> None:
        # Whether the peer of the exchange on this upstream connection is still the App it was
        # judged as, under the identity map in force now.
        self._still_trusted = still_trusted
        self.streams: dict[HttpConnection, bool] = {}
        self._rejudges: dict[HttpConnection, Rejudge] = {}
        self._retires = 0
        self._rechecks = 0
        self._policies = 0

    def mark(self) -> tuple[int, int, int]:
        """Taken when a request arrives, before it is judged: the changes it has seen."""
        return self._retires, self._rechecks, self._policies

    def enter(
        self, up: HttpConnection, mark: tuple[int, int, int], rejudge: Rejudge | None = None
    ) -> None:
        """List the exchange on ``up``, cut already if a change since ``mark`` reaches it.
        ``rejudge`` judges its request again when the policy changes (None: the proxy has no
        policy that could refuse it later)."""
        retires, rechecks, policies = mark
        if retires != self._retires or (rechecks != self._rechecks and not self._still_trusted(up)):
            up.cut = caller_expired
        elif rejudge is not None and policies != self._policies:
            up.cut = _revoked(rejudge)
        else:
            up.cut = None
        self.streams[up] = False
        if rejudge is not None:
            self._rejudges[up] = rejudge

    def leave(self, up: HttpConnection) -> None:
        del self.streams[up]
        self._rejudges.pop(up, None)

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

    def policy_applied(self) -> None:
        """A new policy is in force: cut the exchanges it refuses (and any listed later whose
        request arrived before it, see mark)."""
        self._policies += 1
        for up, streaming in list(self.streams.items()):
            rejudge = self._rejudges.get(up)
            if rejudge is not None and up.cut is None:
                error = _revoked(rejudge)
                if error is not None:
                    cut_exchange(up, streaming, error)


def _revoked(rejudge: Rejudge) -> Callable[[], SidecarError] | None:
    """The error to cut an exchange with if the policy in force refuses it now, else None. A
    judge that fails cuts it too: in doubt, the exchange does not go on."""
    try:
        refusal = rejudge()
    except Exception as exc:  # a bug in the judge: fail closed, and say so in the log
        log.exception("the judge failed on an exchange under way; cut")
        message = f"judging the exchange under the new policy failed ({type(exc).__name__})"
        return lambda: PolicyRevoked(message)
    if refusal is None:
        return None
    message = (
        f"the policy applied while the exchange was under way refuses it: "
        f"{refusal.reason}: {refusal.message}"
    )
    return lambda: PolicyRevoked(message, refusal.layer)
