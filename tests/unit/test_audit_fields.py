"""Pure pieces of the audit trail: what an MCP body yields for the record, the tail filter and
line, the time format, and the bounded metric labels."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from sidecar.audit import rfc3339, summarize
from sidecar.audit.tail import Filter, format_line, parse_duration
from sidecar.mcp.policy import parse_policy
from sidecar.metrics import OTHER, SidecarMetrics, granted_tool_names


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_tools_call_yields_method_name_and_argument_keys_never_values():
    summary = summarize(
        body(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/call",
                "params": {"name": "add", "arguments": {"a": "SECRET", "b": 2}},
            }
        )
    )
    assert (summary.method, summary.names, summary.arg_keys) == ("tools/call", ("add",), ("a", "b"))
    assert summary.tool == "add"
    assert "SECRET" not in repr(summary)


def test_resources_by_uri_batches_and_meta_traceparent():
    summary = summarize(
        body(
            [
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "resources/read",
                    "params": {"uri": "file:///x"},
                },
                {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "prompts/get",
                    "params": {"name": "p", "_meta": {"traceparent": "00-abc"}},
                },
            ]
        )
    )
    assert summary.method == "resources/read,prompts/get"
    assert summary.names == ("file:///x", "p")
    assert summary.tool is None and summary.traceparent == "00-abc"


@pytest.mark.parametrize(
    "raw", [b"", b"not json", b"[1,2]", b'{"method": 5}', b"\xff\xfe", b"[" * 100_000]
)
def test_bodies_the_policy_refuses_yield_nothing_and_never_raise(raw):
    assert summarize(raw).method is None


@given(
    st.recursive(
        st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)
    )
)
def test_summarize_never_raises_on_any_json(document):
    summarize(json.dumps(document).encode())


def test_a_hostile_batch_cannot_make_the_record_unbounded():
    messages = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": f"t{i}"}}
        for i in range(1000)
    ]
    summary = summarize(body(messages))
    assert len(summary.methods) <= 32 and len(summary.names) <= 32


def test_rfc3339_is_utc_with_microseconds():
    assert rfc3339(0.5) == "1970-01-01T00:00:00.500000Z"
    assert rfc3339(1.9999999) == "1970-01-01T00:00:02.000000Z"
    parsed = dt.datetime.fromisoformat(rfc3339(1_800_000_000.25).replace("Z", "+00:00"))
    assert parsed.timestamp() == 1_800_000_000.25


RECORD = {
    "kind": "decision",
    "time": "2026-12-05T10:00:00.000000Z",
    "direction": "inbound",
    "caller": "spiffe://public/ns/default/client",
    "callee": "spiffe://public/ns/default/tools",
    "verb": "POST",
    "path": "mcp",
    "mcp_method": "tools/call",
    "names": ["delete_all"],
    "decision": "deny",
    "layer": "mcp",
    "reason": "tool_not_granted",
    "rule": None,
    "status": 403,
    "duration_ms": 1.25,
}


@pytest.mark.parametrize(
    ("wanted", "matches"),
    [
        (Filter(), True),
        (Filter(denied=True), True),
        (Filter(caller="client"), True),
        (Filter(caller="spiffe://public/ns/default/client"), True),
        (Filter(caller="cli"), False),
        (Filter(tool="delete_all"), True),
        (Filter(tool="delete"), False),
        (Filter(since=dt.datetime(2026, 12, 5, 9, tzinfo=dt.UTC)), True),
        (Filter(since=dt.datetime(2026, 12, 5, 11, tzinfo=dt.UTC)), False),
    ],
)
def test_tail_filter(wanted, matches):
    assert wanted.matches(RECORD) is matches


def test_tail_filter_skips_checkpoints_allowed_and_other_methods():
    assert not Filter().matches({"kind": "checkpoint"})
    assert not Filter(denied=True).matches(RECORD | {"decision": "allow"})
    assert not Filter(tool="delete_all").matches(RECORD | {"mcp_method": "prompts/get"})


def test_tail_line_reads_as_a_sentence():
    assert format_line(RECORD) == (
        "2026-12-05T10:00:00.000Z DENY  in  client → tools  POST /mcp tools/call delete_all  "
        "mcp:tool_not_granted  403 1.2ms"
    )


def test_tail_line_of_an_answer_cut_after_its_head_says_so_and_why():
    cut = RECORD | {
        "decision": "allow",
        "layer": "acl",
        "reason": "default_allow",
        "status": 200,
        "cut": "ERR_PEER_SVID_EXPIRED: the peer's SVID expired",
    }
    assert format_line(cut).endswith(
        "200 1.2ms  CUT ERR_PEER_SVID_EXPIRED: the peer's SVID expired"
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("10m", 600), ("2h", 7200), ("1.5d", 129600)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "-5m", "5 m", "5w"])
def test_bad_durations_name_the_form(text):
    with pytest.raises(ValueError, match=r"e\.g\. 10m"):
        parse_duration(text)


def _samples(metrics: SidecarMetrics) -> list[dict]:
    text = metrics.render().decode()
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "trustmesh_requests_total"
    ]


def observe(metrics: SidecarMetrics, **overrides) -> None:
    labels = {
        "caller": "client",
        "callee": "tools",
        "decision": "allow",
        "layer": "mcp",
        "reason": "granted",
        "mcp_method": "tools/call",
        "tool": "add",
        "status": 200,
        "seconds": 0.001,
    } | overrides
    metrics.observe_request("inbound", **labels)


def test_tool_label_is_bounded_to_granted_names():
    policy = parse_policy(
        {
            "apiVersion": "trustmesh.dev/v1alpha1",
            "kind": "MCPServerAccessPolicy",
            "metadata": {"name": "tools"},
            "spec": {
                "rules": [
                    {
                        "callers": [{"appID": "client"}],
                        "grants": [
                            {"capability": "tools", "names": ["add"]},
                            {"capability": "prompts", "names": ["p"]},
                        ],
                    },
                    {
                        "callers": [{"appID": "*"}],
                        "grants": [{"capability": "tools", "names": ["*"]}],
                    },
                ]
            },
        }
    )
    assert granted_tool_names(policy) == {"add"}
    metrics = SidecarMetrics()
    metrics.set_granted_tools(granted_tool_names(policy))
    observe(metrics)
    for n in range(100):  # a caller inventing tool names
        observe(metrics, tool=f"invented-{n}", decision="deny")
    observe(metrics, mcp_method="made/up")
    tools = {(s["tool"], s["decision"]) for s in _samples(metrics)}
    assert tools == {("add", "allow"), (OTHER, "deny")}
    assert {s["mcp_method"] for s in _samples(metrics)} == {"tools/call", OTHER}


def test_metrics_registries_are_isolated():
    first, second = SidecarMetrics(), SidecarMetrics()
    observe(first)
    assert _samples(first) and not _samples(second)


def test_tail_never_prints_a_callers_control_characters():
    hostile = RECORD | {"names": ["x\x1b]0;pwned\x07\nFAKE allow"], "path": "a\u202eb"}
    line = format_line(hostile)
    assert "\x1b" not in line and "\n" not in line and "\u202e" not in line
    assert "\\x1b]0;pwned\\x07\\x0aFAKE allow" in line


def test_names_and_keys_are_bounded_in_length():
    long = "n" * 100_000
    summary = summarize(
        body({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": long, "arguments": {long: 1}}})
    )  # fmt: skip
    assert len(summary.names[0]) == 257 and len(summary.arg_keys[0]) == 257


@pytest.mark.parametrize(
    "change",
    [
        {"svid": ""},
        {"svid": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"},
        {"sig": "not base64!"},
        {"sig": ""},
        {"time": 5},
        {"svid": None},
    ],
)
def test_a_malformed_checkpoint_is_invalid_never_a_crash(change, mesh_ca):
    import time

    from sidecar.audit import CheckpointInvalid, checkpoint_entry, verify_checkpoint
    from tests._support.pki import issue

    entry = checkpoint_entry(5, time.time(), "0" * 64, 4, issue(mesh_ca, "server"))
    assert verify_checkpoint(entry, mesh_ca.bundle) == "spiffe://public/ns/default/server"
    with pytest.raises(CheckpointInvalid):
        verify_checkpoint(entry | change, mesh_ca.bundle)
