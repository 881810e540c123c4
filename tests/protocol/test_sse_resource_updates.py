"""Resource updates on an event stream, through the filter the sidecar puts on every MCP stream.

An update about a URI the caller may not read is left out of the stream (its event id too: the
caller cannot resume from an event it never got); one about a URI it may read passes byte for
byte; and "may read" is the policy in force when the event passes, so revoking a resource
grant silences a stream opened before.
"""

from __future__ import annotations

import json

from identity import AppIdentity
from sidecar.mcp import PendingLists, SseFilter, parse_policy, parse_stream
from sidecar.mcp.policy import revoke
from sidecar.pipeline import InboundRequest
from sidecar.proxy.mcp_route import content_filter
from tests._support.mcp_policies import CALLER, POLICY

SERVER = AppIdentity("public", "default", "mcp-server")
REQUEST = InboundRequest(
    caller=AppIdentity("public", "default", CALLER),
    callee=SERVER,
    verb="GET",
    method="mcp",
    headers={"mcp-protocol-version": "2025-11-25"},
)


def updated(uri: str) -> dict:
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": uri}}


def event(message, event_id: str) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return b"id: " + event_id.encode() + b"\nevent: message\ndata: " + data + b"\n\n"


def stream_filter(policy_now, seen_ids: list[str]) -> SseFilter:
    backstop = content_filter(None, REQUEST, policy_now, sid=None)
    return SseFilter(PendingLists(), backstop=backstop, on_event_id=seen_ids.append)


def test_only_updates_about_readable_uris_reach_the_caller():
    seen: list[str] = []
    ok = event(updated("file:///ok.txt"), "e2")
    stream = event(updated("file:///secret.txt"), "e1") + ok + event(updated("file:///b"), "e3")
    for size in (1, 5, 64, len(stream)):
        seen.clear()
        f = stream_filter(lambda: POLICY, seen)
        out = b"".join(f.feed(stream[i : i + size]) for i in range(0, len(stream), size))
        out += f.close()
        assert out == ok
        assert seen == ["e2"]
        assert f.failed is None


def test_a_batch_keeps_what_the_caller_may_see():
    batch = [updated("file:///secret.txt"), updated("file:///ok.txt")]
    f = stream_filter(lambda: POLICY, [])
    out = parse_stream(f.feed(event(batch, "b1")))
    assert [json.loads(e.data) for e in out] == [[updated("file:///ok.txt")]]
    only_hidden = f.feed(event([updated("file:///secret.txt")], "b2"))
    assert only_hidden == b""


def test_a_revoked_resource_grant_silences_a_stream_opened_before():
    policies = [POLICY]
    f = stream_filter(lambda: policies[0], [])
    before = f.feed(event(updated("file:///ok.txt"), "u1"))
    assert parse_stream(before)[0].id == "u1"
    policies[0] = revoke(POLICY, CALLER, "resources", ["file:///ok.txt"])
    assert f.feed(event(updated("file:///ok.txt"), "u2")) == b""
    # The twin: other traffic on the same stream still passes.
    progress = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
    assert parse_stream(f.feed(event(progress, "u3")))[0].id == "u3"


def test_a_policy_granting_every_resource_passes_every_update():
    doc = {
        "kind": "MCPServerAccessPolicy",
        "apiVersion": "trustmesh.dev/v1alpha1",
        "metadata": {"name": "mcp-server"},
        "spec": {"rules": [{"callers": [{"appID": CALLER}],
                            "grants": [{"capability": "resources", "names": ["*"]}]}]},
    }  # fmt: skip
    everything = parse_policy(doc)
    f = stream_filter(lambda: everything, [])
    raw = event(updated("file:///secret.txt"), "w1")
    assert f.feed(raw) == raw
