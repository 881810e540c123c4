"""Each cheap check on the MCP path against the plain code it replaced (the reference).

The per-request work of the MCP policy was cut by swapping loops for C-level equivalents; each
swap is only safe if it answers exactly what the readable version answers, for any input, so
hypothesis holds the two against each other.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from identity import AppIdentity
from sidecar.http.headers import FieldView, get_header
from sidecar.judge.verdict import Facts
from sidecar.mcp.filtering import _BYTE_MARKS, _KEY_MARKS, may_hold_list
from sidecar.mcp.headers import _plain_ok
from sidecar.mcp.inspect import MAX_AUDITED, MAX_AUDITED_CHARS, RequestVerdict, _audited
from sidecar.mcp.jsonstrict import PROTOCOL_KEYS, McpRequestRejected, check_envelope, fold_key
from sidecar.pipeline import InboundRequest
from sidecar.policy import Decision
from sidecar.proxy.mcp_route import (
    MCP_FIELDS,
    _count_last_event_ids,
    _last_event_id_fields,
    _planning_fields,
    mcp_fields,
)

CALLER = AppIdentity("public", "default", "caller")

TEXT = st.text(
    st.one_of(
        st.characters(min_codepoint=0, max_codepoint=0x80),
        st.characters(),
        st.sampled_from(["\t", "\x7f", "\u00a0", "\u200b", "ſ", "K"]),
    ),
    max_size=12,
)


@given(TEXT)
def test_plain_header_value_check_matches_the_character_loop(value):
    reference = all(c == "\t" or " " <= c <= "~" for c in value)
    assert _plain_ok(value) is reference


KEYS = st.one_of(
    TEXT,
    st.sampled_from(["Name", "ID", "iD", "name\x00", "Method\u200b", "ſ", "uri\t", "jsonRPC"]),
    st.sampled_from(sorted(PROTOCOL_KEYS)),
)


@given(st.dictionaries(KEYS, st.just(1), max_size=4))
def test_envelope_check_refuses_exactly_the_keys_that_fold_to_a_protocol_key(members):
    reference = any(k not in PROTOCOL_KEYS and fold_key(k) in PROTOCOL_KEYS for k in members)
    for message in (members, {"params": members}, {"params": {"ref": members}}):
        try:
            check_envelope(message)
            refused = False
        except McpRequestRejected:
            refused = True
        assert refused is reference


HEADER_NAMES = st.sampled_from(
    [b"last-event-id", b"Last-Event-ID", b"LAST-EVENT-ID", b"last-event-i", b"host", b"x"]
)
PAIRS = st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=4)), max_size=6)


@given(PAIRS)
def test_last_event_id_count_matches_the_case_insensitive_loop(pairs):
    reference = sum(1 for n, _ in pairs if n.lower() == b"last-event-id")
    assert _count_last_event_ids(pairs) == reference


ODD_NAMES = st.one_of(
    HEADER_NAMES,
    st.binary(max_size=30),
    st.sampled_from([b"x\nlast-event-id", b"last-event-id\n", b"\n", b""]),
)


@given(st.lists(st.tuples(ODD_NAMES, st.just(b"v")), max_size=6))
def test_last_event_id_count_is_never_below_the_loop_whatever_the_names(pairs):
    """Names are tokens (no line feed); even names that are not can only raise the count,
    which refuses (404) rather than lets through."""
    reference = sum(1 for n, _ in pairs if n.lower() == b"last-event-id")
    assert _count_last_event_ids(pairs) >= reference
    if not any(b"\n" in n for n, _ in pairs):
        assert _count_last_event_ids(pairs) == reference


RESPONSE_NAMES = st.sampled_from(
    [b"mcp-session-id", b"content-type", b"content-encoding", b"Content-Type", b"server"]
)


@given(st.lists(st.tuples(RESPONSE_NAMES, st.binary(max_size=4)), max_size=6))
def test_response_fields_read_in_one_pass_match_get_header(pairs):
    fields = _planning_fields(pairs)
    for name in (b"mcp-session-id", b"content-type", b"content-encoding"):
        assert fields.get(name) == get_header(pairs, name)


FACT_CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "verb": st.text(max_size=3),
        "path": st.text(max_size=3),
        "policy_version": st.text(max_size=3),
        "bearer_subject": st.none() | st.text(max_size=3),
        "names": st.tuples(st.text(max_size=2)),
        "arg_keys": st.tuples(st.text(max_size=2)),
        "mcp_methods": st.tuples(st.text(max_size=2)),
    },
)


@given(FACT_CHANGES, FACT_CHANGES)
def test_facts_but_is_dataclasses_replace(first, changes):
    facts = Facts(**first)
    assert facts.but(**changes) == replace(facts, **changes)


@given(FACT_CHANGES, st.tuples(st.text(max_size=2)), st.tuples(), st.tuples(st.text()))
def test_facts_with_mcp_is_but_with_the_three_mcp_fields(first, methods, names, keys):
    facts = Facts(**first)
    expected = facts.but(mcp_methods=methods, names=names, arg_keys=keys)
    assert facts.with_mcp(methods, names, keys) == expected


def test_facts_but_refuses_an_unknown_field_like_replace():
    try:
        Facts().but(nonsense=1)
    except TypeError as exc:
        assert "nonsense" in str(exc)
    else:
        raise AssertionError("Facts.but accepted an unknown field")


FIELD_NAMES = st.sampled_from(
    [b"mcp-session-id", b"last-event-id", b"mcp-method", b"mcp-name", b"Mcp-Name", b"host"]
)


@given(st.lists(st.tuples(FIELD_NAMES, st.binary(max_size=4)), max_size=8))
def test_mcp_fields_read_as_the_header_view_reads_them(pairs):
    view = FieldView(pairs)
    request = InboundRequest(CALLER, CALLER, "POST", "mcp", view)
    fields = mcp_fields(request)
    for name in MCP_FIELDS:
        assert fields.get(name.decode()) == view.get(name.decode())
    assert mcp_fields(request) is fields  # read once per request, then kept
    assert mcp_fields(InboundRequest(CALLER, CALLER, "POST", "mcp", FieldView([]))) == {}


BODY_PIECES = st.sampled_from(
    [*_KEY_MARKS, *_BYTE_MARKS, b'"tool"', b'"resourc', b'"tas', b"tools", b'"text"', b'"',
     b'"TOOLS"', b'"Tasks"', b'"ResourceTemplates"', b'"pRoMpTs"', b"\xef\xbb", b"\xc5"]
)  # fmt: skip


@given(st.lists(BODY_PIECES | st.binary(max_size=6), max_size=8).map(b"".join))
def test_list_prescan_written_out_matches_the_marks(body):
    # Key marks in any ASCII letter case (a case-insensitive client reads "Tasks" as tasks).
    assert may_hold_list(body) is (
        any(mark in body.lower() for mark in _KEY_MARKS)
        or any(mark in body for mark in _BYTE_MARKS)
    )


@given(st.lists(st.text(max_size=3) | st.text(min_size=250, max_size=260), max_size=70))
def test_audited_names_are_the_loop_over_cut_names(values):
    reference = tuple(dict.fromkeys(v[:MAX_AUDITED_CHARS] for v in values))[:MAX_AUDITED]
    assert _audited(list(values)) == reference


@given(st.lists(PAIRS, min_size=1, max_size=4), st.lists(st.integers(0, 3), max_size=8))
def test_last_event_id_count_kept_per_request_follows_whichever_request_is_asked(heads, order):
    """The count is kept for the last request only (by identity): asking about requests in any
    interleaving (other connections' heads between a head and its body) gives each its own."""
    requests = [InboundRequest(CALLER, CALLER, "GET", "mcp", FieldView(p)) for p in heads]
    for index in [*order, *range(len(requests))]:
        request = requests[index % len(requests)]
        expected = sum(1 for n, _ in request.headers.pairs if n.lower() == b"last-event-id")
        assert _last_event_id_fields(request) == expected


@given(st.lists(st.sampled_from(["", "tools/call", "ping"]), max_size=4).map(tuple))
def test_mcp_methods_leave_out_client_responses_as_the_loop_does(methods):
    verdict = RequestVerdict(Decision.allow("mcp", "x"), "2025-06-18", methods=methods)
    assert verdict.mcp_methods == tuple(m for m in methods if m)
