"""List filtering for each list type, pagination kept, cache hints forced private, fail closed."""

from __future__ import annotations

import json

import pytest

from sidecar.mcp import (
    PendingFilter,
    PendingLists,
    ResponseFilterFailed,
    failure_body,
    filter_list_result,
    filter_response_body,
)
from tests._support.mcp_policies import CALLER, POLICY


def response(member, items, **extra):
    return {"jsonrpc": "2.0", "id": 7, "result": {member: items, **extra}}


CASES = [
    ("tools/list", "tools", "name", ["add", "rm", "echo", "Add"], ["add", "echo"]),
    ("prompts/list", "prompts", "name", ["review", "other"], ["review"]),
    ("resources/list", "resources", "uri", ["file:///ok.txt", "file:///secret"], ["file:///ok.txt"]),
    ("resources/templates/list", "resourceTemplates", "uriTemplate",
     ["db://{table}", "file:///{path}"], ["db://{table}"]),
]  # fmt: skip


@pytest.mark.parametrize(("method", "member", "key", "names", "kept"), CASES)
def test_each_list_type(method, member, key, names, kept):
    items = [{key: n, "description": f"about {n}"} for n in names]
    message = response(member, items, nextCursor="page-2", _meta={"x": 1})
    out = filter_list_result(message, method, CALLER, POLICY)
    assert [i[key] for i in out["result"][member]] == kept
    assert out["result"]["nextCursor"] == "page-2" and out["result"]["_meta"] == {"x": 1}
    assert "cacheScope" not in out["result"]  # no hints before 2026-07-28 unless sent
    assert message["result"][member] == items  # input untouched


def test_cache_hints_forced_private():
    message = response("tools", [{"name": "add"}], ttlMs=60000, cacheScope="public")
    out = filter_list_result(message, "tools/list", CALLER, POLICY)
    assert (out["result"]["ttlMs"], out["result"]["cacheScope"]) == (0, "private")
    bare = response("tools", [{"name": "add"}])
    out = filter_list_result(bare, "tools/list", CALLER, POLICY, protocol_version="2026-07-28")
    assert (out["result"]["ttlMs"], out["result"]["cacheScope"]) == (0, "private")


def test_entries_without_a_string_key_are_dropped():
    items = [{"name": "add"}, {"title": "no name"}, {"name": 3}, "add"]
    out = filter_list_result(response("tools", items), "tools/list", CALLER, POLICY)
    assert out["result"]["tools"] == [{"name": "add"}]


def test_error_responses_pass_unchanged():
    message = {"jsonrpc": "2.0", "id": 7, "error": {"code": -32601, "message": "no tools"}}
    assert filter_list_result(message, "tools/list", CALLER, POLICY) == message


@pytest.mark.parametrize(
    "message",
    [{"jsonrpc": "2.0", "id": 7}, {"jsonrpc": "2.0", "id": 7, "result": []},
     {"jsonrpc": "2.0", "id": 7, "result": {"tools": {"name": "rm"}}},
     {"jsonrpc": "2.0", "id": 7, "result": {"prompts": []}}],
)  # fmt: skip
def test_wrong_shape_fails_closed(message):
    with pytest.raises(ResponseFilterFailed):
        filter_list_result(message, "tools/list", CALLER, POLICY)


PENDING = PendingFilter(7, "tools/list", CALLER, POLICY, "2025-06-18")


def test_filter_response_body():
    data = json.dumps(response("tools", [{"name": "add"}, {"name": "rm"}], nextCursor="n"))
    out = json.loads(filter_response_body(data.encode(), [PENDING]))
    assert out == {
        "jsonrpc": "2.0",
        "id": 7,
        "result": {"tools": [{"name": "add"}], "nextCursor": "n"},
    }


@pytest.mark.parametrize(
    "data",
    [b"{not json", b'{"jsonrpc":"2.0","id":7,"result":{"tools":[],"tools":[{"name":"rm"}]}}',
     b'"text"', b'{"jsonrpc":"2.0","id":8,"result":{"tools":[{"name":"rm"}]}}',
     b'{"jsonrpc":"2.0","id":"7","result":{"tools":[{"name":"rm"}]}}',
     b'{"jsonrpc":"2.0","id":7,"result":{"tools":"rm"}}'],
)  # fmt: skip
def test_filter_response_body_fails_closed(data):
    with pytest.raises(ResponseFilterFailed) as info:
        filter_response_body(data, PendingLists([PENDING]))
    assert info.value.http_status == 502


def test_batch_response_filters_only_pending_elements():
    other = {"jsonrpc": "2.0", "id": 8, "result": {"tools": [{"name": "rm"}]}}
    data = json.dumps([response("tools", [{"name": "rm"}, {"name": "add"}]), other]).encode()
    out = json.loads(filter_response_body(data, [PENDING]))
    assert out[0]["result"]["tools"] == [{"name": "add"}] and out[1] == other


def test_failure_body():
    assert json.loads(failure_body(7, "bad")) == {
        "jsonrpc": "2.0", "id": 7,
        "error": {"code": -32603, "message": "upstream response withheld: bad"},
    }  # fmt: skip
