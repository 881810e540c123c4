"""Before a pooled outbound connection is reused, the peer its handshake proved must still be
trusted: its SVID not expired, and its SPIFFE ID still one the identity map derives for the
App it was dialled for (plain data, no sockets)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from identity import AppIdentity, IdentityMap, PeerSvid, SpiffeId, current_identity_map
from sidecar.proxy.outbound import TrustedPeer, _peer_still_trusted

SERVER = AppIdentity("public", "default", "server")


def conn(not_after: float, spiffe_id: str = "spiffe://public/ns/default/server", under=None):
    svid = PeerSvid(SpiffeId.parse(spiffe_id), not_after)
    under = under if under is not None else current_identity_map()
    return SimpleNamespace(peer=TrustedPeer(svid, SERVER, under))


def test_a_peer_whose_svid_has_expired_is_not_reused():
    assert not _peer_still_trusted(conn(time.time() - 1), None)


def test_a_peer_still_valid_under_the_same_map_is_reused():
    assert _peer_still_trusted(conn(time.time() + 3600), None)


def test_under_a_new_map_the_peer_is_checked_again_and_kept_when_still_the_app():
    stale = IdentityMap()  # a map object other than the one in force: forces a re-check
    checked = conn(time.time() + 3600, under=stale)
    assert _peer_still_trusted(checked, None)
    assert checked.peer.trusted_under is current_identity_map()


def test_under_a_new_map_a_peer_that_is_another_app_is_not_reused():
    other = conn(time.time() + 3600, "spiffe://public/ns/default/intruder", under=IdentityMap())
    assert not _peer_still_trusted(other, None)


def test_a_connection_the_proxy_did_not_dial_is_left_to_the_pool():
    assert _peer_still_trusted(SimpleNamespace(), None)
