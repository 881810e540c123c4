"""What a proxy's list of exchanges under way cuts when trust or policy changes (plain data).

The relay's side (a cut stream stops, a cut upload stops) is shown through real sidecars in
``tests/security``; here, which exchanges a change reaches, including one whose request arrived
before the change but that was listed only after it (its body was read whole meanwhile).
"""

from __future__ import annotations

from sidecar.policy import Decision
from sidecar.proxy.exchanges import LiveExchanges, PolicyRevoked

DENIED = Decision.deny("acl", "ERR_PERMISSION_DENIED", "caller may not call this app", 403)


class Upstream:
    """The parts of an upstream connection a cut touches."""

    def __init__(self) -> None:
        self.cut = None
        self.upload_from = None
        self.interrupted = False

    def interrupt(self) -> None:
        self.interrupted = True


def _listed(exchanges: LiveExchanges, rejudge, streaming: bool = True) -> Upstream:
    up = Upstream()
    exchanges.enter(up, exchanges.mark(), rejudge)
    exchanges.streams[up] = streaming
    return up


def test_a_new_policy_cuts_the_streams_it_refuses_and_names_why():
    exchanges = LiveExchanges(lambda up: True)
    refused = _listed(exchanges, lambda: DENIED)
    allowed = _listed(exchanges, lambda: None)
    exchanges.policy_applied()
    assert refused.interrupted and allowed.cut is None and not allowed.interrupted
    error = refused.cut()
    assert isinstance(error, PolicyRevoked) and error.http_status == 403
    assert "ERR_PERMISSION_DENIED: caller may not call this app" in str(error)


def test_a_whole_answer_is_marked_but_let_finish():
    exchanges = LiveExchanges(lambda up: True)
    up = _listed(exchanges, lambda: DENIED, streaming=False)
    exchanges.policy_applied()
    assert up.cut is not None and not up.interrupted


def test_an_upload_under_way_is_stopped_too():
    exchanges = LiveExchanges(lambda up: True)
    up = _listed(exchanges, lambda: DENIED)
    caller = Upstream()
    up.upload_from = caller
    exchanges.policy_applied()
    assert caller.interrupted


def test_a_policy_applied_before_the_exchange_was_listed_still_reaches_it():
    exchanges = LiveExchanges(lambda up: True)
    mark = exchanges.mark()  # the request arrives, its body is read...
    exchanges.policy_applied()  # ...while a policy that refuses it is applied
    refused, twin = Upstream(), Upstream()
    exchanges.enter(refused, mark, lambda: DENIED)
    exchanges.enter(twin, mark, lambda: None)
    assert refused.cut is not None and twin.cut is None


def test_an_exchange_listed_after_the_change_is_not_judged_again():
    exchanges = LiveExchanges(lambda up: True)
    exchanges.policy_applied()
    calls = []
    up = Upstream()
    exchanges.enter(up, exchanges.mark(), lambda: calls.append(1))
    assert up.cut is None and calls == []  # judged under the new policy already


def test_a_judge_that_fails_on_an_exchange_under_way_cuts_it():
    def broken():
        raise KeyError("a bug")

    exchanges = LiveExchanges(lambda up: True)
    up = _listed(exchanges, broken)
    exchanges.policy_applied()
    assert up.interrupted and "KeyError" in str(up.cut())


def test_an_exchange_without_a_rejudge_is_left_to_trust_changes():
    exchanges = LiveExchanges(lambda up: True)
    up = _listed(exchanges, None)
    exchanges.policy_applied()
    assert up.cut is None
    exchanges.retire_all()
    assert up.interrupted and up.cut().code == "ERR_PEER_SVID_EXPIRED"


def test_an_ended_exchange_is_forgotten():
    exchanges = LiveExchanges(lambda up: True)
    up = _listed(exchanges, lambda: DENIED)
    exchanges.leave(up)
    exchanges.policy_applied()
    assert up.cut is None
