"""Properties of the MCP layer: filtering, call/authorize agreement, SSE chunking, strict JSON."""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.mcp import (
    MCPServerAccessPolicy,
    PendingFilter,
    PendingLists,
    SseFilter,
    SseParser,
    authorize_item,
    filter_list_result,
    grant,
    inspect_request,
    loads_strict,
    parse_stream,
)

GRANTABLE = ["add", "echo", "rm", "Add", "ädd", "*x", "a.b-c_d"]
NAMES = st.sampled_from([*GRANTABLE, "add ", "add\u0000"])  # requests may carry any name
CALLERS = st.sampled_from(["a", "b", "*"])


@st.composite
def policies(draw):
    policy = MCPServerAccessPolicy.deny_all("srv")
    for _ in range(draw(st.integers(0, 4))):
        names = draw(st.lists(st.sampled_from([*GRANTABLE, "*"]), min_size=1, max_size=3))
        policy = grant(policy, draw(CALLERS), "tools", names)
    return policy


@given(policies(), st.sampled_from(["a", "b", "c"]), st.lists(NAMES, max_size=8))
def test_filtered_list_is_a_granted_subset(policy, caller, names):
    message = {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": n} for n in names]}}
    out = filter_list_result(message, "tools/list", caller, policy)["result"]["tools"]
    assert all(item in message["result"]["tools"] for item in out)
    assert all(authorize_item(policy, caller, "tools", i["name"]).allowed for i in out)
    assert len(out) == sum(authorize_item(policy, caller, "tools", n).allowed for n in names)


@given(policies(), st.sampled_from(["a", "b", "c"]), NAMES)
def test_tools_call_allowed_iff_authorize_item(policy, caller, name):
    data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
    verdict = inspect_request(
        data.encode(), caller=caller, policy=policy, headers={}, negotiated_version=None
    )
    assert verdict.allowed is authorize_item(policy, caller, "tools", name).allowed


# --- SSE ----------------------------------------------------------------------------------------

LINE_TEXT = st.text(st.characters(blacklist_characters="\r\n", codec="utf-8"), max_size=12)
EOLS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def sse_streams(draw):
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["data", "event", "id", "retry", "comment", "blank", "other"]))
        value = draw(LINE_TEXT).encode()
        line = {
            "data": b"data:" + value, "event": b"event: " + value, "id": b"id: " + value,
            "retry": b"retry: 1500", "comment": b":" + value, "blank": b"",
            "other": b"x-y: " + value,
        }[kind]  # fmt: skip
        parts.append(line + draw(EOLS))
    return b"".join(parts)


def split_everywhere(stream: bytes):
    yield [stream]
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    yield [stream[i : i + 1] for i in range(len(stream))]


@settings(max_examples=60)
@given(sse_streams())
def test_sse_parsing_is_independent_of_chunking(stream):
    expected = parse_stream(stream)
    for chunks in split_everywhere(stream):
        parser = SseParser()
        events = [b.event for c in chunks for b in parser.feed(c) if b.event is not None]
        assert events == expected


LIST = {"jsonrpc": "2.0", "id": 7, "result": {"tools": [{"name": "add"}, {"name": "secret"}]}}
DENIED_ITEM = re.compile(rb'"name":[ \t]*"secret"')


@settings(max_examples=60)
@given(sse_streams(), sse_streams(), st.booleans(), EOLS)
def test_sse_filter_never_emits_the_pending_list_unfiltered(before, after, malformed, eol):
    policy = grant(MCPServerAccessPolicy.deny_all("srv"), "a", "tools", ["add"])
    middle = b"data: " + json.dumps(LIST).encode() + eol + eol
    if malformed:
        middle = b"data: {" + eol + eol + middle
    stream = before + eol + eol + middle + after
    outputs = set()
    for chunks in split_everywhere(stream):
        table = PendingLists([PendingFilter(7, "tools/list", "a", policy, "2025-06-18")])
        f = SseFilter(table, own_ids=(7,))
        out = b"".join(f.feed(c) for c in chunks) + f.close()
        # The denied item as JSON writes it: longer than any generated line can be (the word
        # alone may well appear in the surrounding lines hypothesis draws).
        assert not DENIED_ITEM.search(out), out
        outputs.add(out)
    assert len(outputs) == 1  # and the output does not depend on the chunking


# --- strict JSON agrees with json.loads on ordinary documents -----------------------------------

KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=6)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10),
)  # fmt: skip
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


@given(DOCS, st.booleans())
def test_jsonstrict_accepts_what_json_loads_accepts(document, ascii_only):
    text = json.dumps(document, ensure_ascii=ascii_only)
    data = text.encode("utf-8", errors="surrogatepass")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return  # hypothesis text can hold lone surrogates; not an ordinary document
    if "\\ud8" in text.lower() or any("\ud800" <= c <= "\udfff" for c in text):
        return
    assert loads_strict(data, max_bytes=1 << 20) == json.loads(text)


# --- namespaces (#10.1) --------------------------------------------------------------------------

NAMESPACES = st.sampled_from(["default", "dev", "prod"])
CALLER_REFS = st.tuples(st.sampled_from(["a", "b", "*"]), st.sampled_from([None, "dev", "*"]))


@given(
    st.lists(CALLER_REFS, min_size=1, max_size=4),
    NAMESPACES,
    st.tuples(NAMESPACES, st.sampled_from(["a", "b", "c"])),
)
def test_a_grant_serves_exactly_the_namespaces_it_names(refs, server_ns, who):
    """Granted iff some entry matches the App ID (or ``*``) and the namespace it names, where
    an entry without one names the server's own, and ``*`` only where written."""
    from sidecar.mcp import Caller

    policy = MCPServerAccessPolicy.deny_all("srv").in_namespace(server_ns)
    for app_id, namespace in refs:
        policy = grant(policy, app_id if namespace is None else f"{namespace}/{app_id}",
                       "tools", ["t"])  # fmt: skip
    caller = Caller(*who)
    expected = any(
        app in ("*", caller.app_id) and (ns or server_ns) in ("*", caller.namespace)
        for app, ns in refs
    )
    assert authorize_item(policy, caller, "tools", "t").allowed is expected


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(["x", "y", "z"]), st.sampled_from([f"s{i}" for i in range(12)])),
        max_size=60,
    )
)
def test_a_session_never_changes_hands_and_the_table_stays_bounded(claims):
    from sidecar.mcp.sessions import McpSessions

    sessions = McpSessions(limit=5, per_caller=3)
    first: dict[str, str] = {}
    for caller, sid in claims:
        owner_before = sessions.owner(sid)
        claimed = sessions.claim(caller, sid)
        assert claimed is (owner_before in (None, caller))
        if owner_before is None:
            first[sid] = caller
        owner = sessions.owner(sid)
        assert owner is None or owner == first[sid]
        assert sessions.counts()[0] <= 5
