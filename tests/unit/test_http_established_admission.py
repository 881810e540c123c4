"""Shares of established connections (#10.7): no peer's silent connections decide who is served."""

from __future__ import annotations

from sidecar.http.admission import EstablishedAdmission


class WaitingConnection:
    """Stands in for a connection waiting for its next request head."""

    interrupted = False

    def interrupt(self) -> None:
        self.interrupted = True


def _idle(admission: EstablishedAdmission, key: str):
    slot = admission.admit(key)
    assert slot is not None
    slot.idle = WaitingConnection()
    return slot


async def test_a_full_listener_cuts_an_idle_connection_of_the_peer_holding_most():
    admission = EstablishedAdmission(max_total=4, max_per_key=4)
    squatter = [_idle(admission, "id:squatter") for _ in range(3)]
    other = _idle(admission, "id:other")
    newcomer = admission.admit("id:caller")
    assert newcomer is not None
    assert squatter[0].evicted and squatter[0].idle.interrupted  # the oldest of the most
    assert not other.evicted and not other.idle.interrupted
    assert admission.established == 4 and admission.evicted == 1


def test_a_peer_past_its_share_evicts_its_own_idle_connection_not_another_peers():
    admission = EstablishedAdmission(max_total=10, max_per_key=2)
    other = _idle(admission, "id:other")
    mine = [_idle(admission, "id:squatter") for _ in range(2)]
    assert admission.admit("id:squatter") is not None
    assert mine[0].evicted and not mine[1].evicted and not other.evicted


def test_busy_connections_are_never_cut_and_the_newcomer_is_refused_instead():
    admission = EstablishedAdmission(max_total=2, max_per_key=2)
    busy = [admission.admit("id:a"), admission.admit("id:b")]  # idle is None: request in flight
    assert admission.admit("id:c") is None
    assert not any(slot.evicted for slot in busy)


def test_a_peer_whose_share_is_all_busy_is_refused_while_others_are_served():
    admission = EstablishedAdmission(max_total=10, max_per_key=2)
    assert admission.admit("id:a") and admission.admit("id:a")
    assert admission.admit("id:a") is None
    assert admission.admit("id:b") is not None


def test_release_gives_the_place_back_once_even_after_eviction():
    admission = EstablishedAdmission(max_total=1, max_per_key=1)
    first = _idle(admission, "src:127.0.0.1")
    second = admission.admit("src:127.0.0.1")
    assert second is not None and first.evicted
    admission.release(first)  # the evicted connection's own cleanup: a no-op
    assert admission.established == 1
    admission.release(second)
    assert admission.established == 0
    assert admission.admit("src:127.0.0.1") is not None
