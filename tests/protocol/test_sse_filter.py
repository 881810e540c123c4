"""SseFilter over a realistic mixed stream, fed in small chunks."""

from __future__ import annotations

import json

from sidecar.mcp import PendingFilter, PendingLists, SseFilter, parse_stream
from tests._support.mcp_policies import CALLER, POLICY

PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}
SERVER_REQUEST = {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}}
TOOLS = {
    "jsonrpc": "2.0",
    "id": 7,
    "result": {"tools": [{"name": "add"}, {"name": "rm"}, {"name": "echo"}], "nextCursor": "p2"},
}


def event(message, *, eol=b"\n", event_id=None):
    lines = [b"event: message"]
    if event_id:
        lines.append(b"id: " + event_id)
    lines.append(b"data: " + json.dumps(message).encode())
    return eol.join(lines) + eol + eol


def run(stream: bytes, pending: PendingLists, size: int, own=(7,)):
    f = SseFilter(pending, own_ids=own)
    outputs = [f.feed(stream[i : i + size]) for i in range(0, len(stream), size)]
    return outputs, f.feed(b"") + f.close(), f


def pending():
    return PendingLists([PendingFilter(7, "tools/list", CALLER, POLICY, "2025-06-18")])


def test_mixed_stream_in_small_chunks():
    head = b": keep-alive\r\n\r\n" + event(PROGRESS, eol=b"\r\n") + event(SERVER_REQUEST, eol=b"\r")
    stream = head + event(TOOLS, event_id=b"ev-3") + event(PROGRESS)
    for size in (1, 3, 7, 64):
        table = pending()
        outputs, tail, f = run(stream, table, size)
        out = b"".join(outputs) + tail
        assert f.failed is None
        assert out.startswith(head)  # everything before the list response is byte-identical
        events = parse_stream(out)
        assert [json.loads(e.data) for e in events] == [
            PROGRESS,
            SERVER_REQUEST,
            {"jsonrpc": "2.0", "id": 7,
             "result": {"tools": [{"name": "add"}, {"name": "echo"}], "nextCursor": "p2"}},
            PROGRESS,
        ]  # fmt: skip
        assert events[2].id == "ev-3" and events[2].event == "message"
        assert len(table) == 0  # the answered id is no longer pending


def test_first_event_is_emitted_before_the_stream_ends():
    f = SseFilter(pending(), own_ids=(7,))
    first = f.feed(event(PROGRESS) + b"data: {")
    assert parse_stream(first) != [] and json.loads(parse_stream(first)[0].data) == PROGRESS


def test_malformed_event_while_a_list_is_pending_is_replaced_by_an_error():
    stream = event(PROGRESS) + b'data: {"jsonrpc":"2.0","id":7,"result":{"tools":[\n\n'
    stream += event(TOOLS)
    for size in (1, 5, 1000):
        table = pending()
        outputs, tail, f = run(stream, table, size)
        out = b"".join(outputs) + tail
        assert f.failed is not None
        events = [json.loads(e.data) for e in parse_stream(out)]
        assert events[0] == PROGRESS
        assert events[1]["id"] == 7 and events[1]["error"]["code"] == -32603
        assert len(events) == 2  # nothing after the failure, certainly not the unfiltered list
        assert b"rm" not in out
        assert 7 in table  # still pending: a replay elsewhere is still filtered


def test_malformed_event_without_pending_passes_through():
    stream = b"data: not json\n\n" + event(PROGRESS)
    outputs, tail, f = run(stream, PendingLists(), 2, own=())
    assert b"".join(outputs) + tail == stream and f.failed is None


def test_shared_pending_on_a_get_stream():
    table = pending()
    get_stream = SseFilter(table)  # a resumed GET stream carries the POST's response
    out = get_stream.feed(event(TOOLS, event_id=b"s1-9"))
    assert [t["name"] for t in json.loads(parse_stream(out)[0].data)["result"]["tools"]] == [
        "add",
        "echo",
    ]
    assert len(table) == 0


def test_unterminated_list_response_at_eof_is_dropped():
    f = SseFilter(pending(), own_ids=(7,))
    out = f.feed(b"data: " + json.dumps(TOOLS).encode() + b"\n") + f.close()
    assert out == b""


def test_oversized_event_fails_closed():
    f = SseFilter(pending(), own_ids=(7,), max_event_bytes=64)
    out = f.feed(b"data: " + b"x" * 100)
    assert f.failed and json.loads(parse_stream(out)[0].data)["error"]["code"] == -32603
