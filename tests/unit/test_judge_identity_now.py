"""The inbound judge judges each request as the caller's leaf stands *now*.

A kept-alive connection carries what its handshake proved (the SPIFFE ID and the leaf's expiry);
the judge derives the App identity again under the identity map in force and refuses, closing
the connection, once the map no longer gives that ID an App or the leaf has expired.
"""

from __future__ import annotations

import json

import h11

from identity import IdentityBinding, IdentityMap, PeerSvid, SpiffeId
from sidecar.judge import Answer, Forward, InboundJudge, InboundSite, ReadBody
from sidecar.pipeline import InboundPolicy
from sidecar.proxy.mcp_route import McpSessions
from tests.unit.test_judge_inbound import ALLOW_CALLER, ME

NOW = 1_800_000_000.0
SQUATTER = SpiffeId.parse("spiffe://public/ns/default/sa/mcp-client")
RUNNER = SpiffeId.parse("spiffe://public/ns/default/sa/agent-runner")
BOUND = IdentityMap([IdentityBinding(RUNNER, "default", "mcp-client")])


class Maps:
    def __init__(self) -> None:
        self.now = IdentityMap()

    def __call__(self) -> IdentityMap:
        return self.now


def _judge():
    maps = Maps()
    policy = InboundPolicy(version="1", head_checks=(ALLOW_CALLER,))
    site = InboundSite(ME, 8000)
    return InboundJudge(site, lambda: policy, McpSessions(), lambda: None, maps), maps


def _ask(judge, svid: PeerSvid, now: float = NOW):
    request = h11.Request(method=b"GET", target=b"/x", headers=[(b"host", b"mcp-server")])
    handshake = svid.app_identity(IdentityMap())  # what the handshake saw
    return judge.head(request, handshake, None, "10.0.0.9", now, svid)


def _refusal(verdict) -> str:
    assert isinstance(verdict, Answer) and verdict.status == 403, verdict
    assert (b"connection", b"close") in verdict.headers  # nothing more on that connection
    return json.loads(verdict.body)["errorCode"]


def test_twin_a_valid_leaf_under_an_unchanged_map_is_judged_as_its_app():
    judge, _ = _judge()
    verdict = _ask(judge, PeerSvid(SQUATTER, NOW + 60))
    assert not isinstance(verdict, Answer)
    assert verdict.facts.caller.app_id == "mcp-client"


def test_a_binding_applied_after_the_handshake_refuses_the_next_request():
    judge, maps = _judge()
    svid = PeerSvid(SQUATTER, NOW + 60)
    assert not isinstance(_ask(judge, svid), Answer)
    maps.now = BOUND
    assert _refusal(_ask(judge, svid)) == "ERR_PEER_IDENTITY"
    # the bound SPIFFE ID holds the App ID from then on
    assert _ask(judge, PeerSvid(RUNNER, NOW + 60)).facts.caller.app_id == "mcp-client"


def test_a_binding_removed_after_the_handshake_is_honoured_too():
    judge, maps = _judge()
    maps.now = BOUND
    svid = PeerSvid(SQUATTER, NOW + 60)
    assert _refusal(_ask(judge, svid)) == "ERR_PEER_IDENTITY"
    maps.now = IdentityMap()
    assert _ask(judge, svid).facts.caller.app_id == "mcp-client"


def test_a_leaf_that_expired_after_the_handshake_is_refused():
    judge, _ = _judge()
    svid = PeerSvid(SQUATTER, NOW + 1)
    assert not isinstance(_ask(judge, svid, NOW), Answer)
    assert _refusal(_ask(judge, svid, NOW + 1)) == "ERR_PEER_SVID_EXPIRED"
    assert "expired" in json.loads(_ask(judge, svid, NOW + 5).body)["message"]


def test_the_mapping_is_derived_once_per_map_not_once_per_request():
    svid = PeerSvid(SQUATTER, NOW + 60)
    first = svid.app_identity(plain := IdentityMap())
    assert svid.app_identity(plain) is first  # cached: same map object
    assert svid.app_identity(IdentityMap()) == first  # a new map is asked again


# -- a body that arrives after the head: judged again by the leaf as it stands then ---------------


def _post_head(judge, svid: PeerSvid, now: float = NOW):
    body = b'{"x": 1}'
    headers = [(b"host", b"mcp-server"), (b"content-length", str(len(body)).encode())]
    request = h11.Request(method=b"POST", target=b"/x", headers=headers)
    step = judge.head(request, svid.app_identity(IdentityMap()), None, "10.0.0.9", now, svid)
    assert isinstance(step, ReadBody), step  # small bodies are read whole, then judged again
    return step, body


def test_twin_a_body_completed_while_the_leaf_is_valid_is_forwarded():
    judge, _ = _judge()
    step, body = _post_head(judge, PeerSvid(SQUATTER, NOW + 60))
    verdict = judge.body(step, body, NOW + 30)
    assert isinstance(verdict, Forward) and verdict.plan.body == body


def test_a_body_completed_after_the_leaf_expired_is_refused():
    judge, _ = _judge()
    step, body = _post_head(judge, PeerSvid(SQUATTER, NOW + 10))
    assert _refusal(judge.body(step, body, NOW + 10)) == "ERR_PEER_SVID_EXPIRED"


def test_a_body_completed_after_a_binding_moved_the_callers_app_id_is_refused():
    judge, maps = _judge()
    step, body = _post_head(judge, PeerSvid(SQUATTER, NOW + 60))
    maps.now = BOUND  # the App ID now belongs to RUNNER; SQUATTER maps to no App
    assert _refusal(judge.body(step, body, NOW + 1)) == "ERR_PEER_IDENTITY"


def test_a_body_completed_after_a_binding_gave_the_leaf_another_app_id_is_refused():
    judge, maps = _judge()
    step, body = _post_head(judge, PeerSvid(RUNNER, NOW + 60))  # judged as sa/agent-runner
    maps.now = BOUND  # ... which is now mcp-client: not the caller the head was judged for
    verdict = judge.body(step, body, NOW + 1)
    assert _refusal(verdict) == "ERR_PEER_IDENTITY"
    assert "changed while the body arrived" in json.loads(verdict.body)["message"]
