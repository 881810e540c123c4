"""Server messages with a member a case-insensitive client reads as one the sidecar judges.

Responses are parsed without the request bodies' case-folding rule, but Go's encoding/json
(notes §5.1) reads ``"Method"`` as ``method`` and the last of ``"uri"``/``"URI"`` as the uri: the
caller would act on a member the content backstop never looked at. Every such message is
refused (withheld, or its event left out); the same message spelled plainly passes.
"""

from __future__ import annotations

import json

import pytest

from identity import AppIdentity
from sidecar.mcp import PendingLists, SseFilter, filter_response_body
from sidecar.mcp.errors import ResponseFilterFailed
from sidecar.mcp.filtering import list_backstop
from sidecar.mcp.sessions import McpSessions
from sidecar.pipeline import InboundRequest
from sidecar.proxy.mcp_route import content_filter
from tests._support.mcp_policies import CALLER, POLICY

UPDATED = "notifications/resources/updated"
SECRET = "file:///secret.txt"
OK = "file:///ok.txt"


def update(**params) -> dict:
    return {"jsonrpc": "2.0", "method": UPDATED, "params": params}


ATTACKS = {
    "Method": {"jsonrpc": "2.0", "Method": UPDATED, "params": {"uri": SECRET}},
    "progress then Method": {
        "jsonrpc": "2.0",
        "method": "notifications/progress",
        "Method": UPDATED,
        "params": {"uri": SECRET},
    },
    "Params": {**update(uri=OK), "Params": {"uri": SECRET}},
    "uri then URI": update(uri=OK, URI=SECRET),
    "Uri alone": update(Uri=SECRET),
    "uri with a zero-width tail": update(**{"uri": OK, "uri\u200b": SECRET}),
    "Result": {"jsonrpc": "2.0", "id": 1, "result": {"content": []}, "Result": {"secret": SECRET}},
    "Tools beside tools": {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "add"}], "Tools": [{"name": SECRET}]},
    },
    "ResourceTemplates": {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"resourceTemplates": [], "RESOURCETEMPLATES": [{"uriTemplate": SECRET}]},
    },
    "Tasks beside tasks": {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tasks": [], "Tasks": [{"taskId": "another-callers-task"}]},
    },
    "Name inside a granted tool": {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"tools": [{"name": "add", "Name": SECRET}]},
    },
    "Data beside data": {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 1, "message": "x", "data": {}, "Data": {"tools": [{"name": SECRET}]}},
    },
    "Data alone": {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 1, "message": "x", "Data": {"tools": [{"name": SECRET}]}},
    },
    "in an error's data": {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": 1, "message": "x", "data": {"tools": [], "Tools": [{"name": SECRET}]}},
    },
}

TWINS = {
    "update": update(uri=OK),
    "update with a title": update(uri=OK, title="ok"),
    "progress": {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"uri": SECRET}},
    "tool list": {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "add", "title": "A"}]}},
    "tool result with ID and id deeper": {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"content": [], "structuredContent": {"id": 1, "ID": 2, "Tools": []}},
    },
}


def test_a_message_with_both_result_and_error_is_refused():
    # A client that reads the result first would get the list the error branch never cut.
    both = {"jsonrpc": "2.0", "id": 7, "error": {"code": 1, "message": "m", "data": {}},
            "result": {"tools": [{"name": "add"}, {"name": SECRET}]}}  # fmt: skip
    with pytest.raises(ResponseFilterFailed, match="both result and error"):
        filter_response_body(json.dumps(both).encode(), [], backstop=list_backstop(CALLER, POLICY))
    error = {"jsonrpc": "2.0", "id": 7, "error": {"code": 1, "message": "m", "data": {}}}
    assert list_backstop(CALLER, POLICY)(error) is None  # the twin: an error alone passes


def test_a_message_with_a_method_and_a_result_is_refused():
    # Read as a notification (or a server request) by SDKs; a lenient client takes the result.
    both = {"jsonrpc": "2.0", "id": 7, "method": "ping",
            "result": {"tools": [{"name": "add"}, {"name": SECRET}]}}  # fmt: skip
    with pytest.raises(ResponseFilterFailed, match="a method and an answer"):
        filter_response_body(json.dumps(both).encode(), [], backstop=list_backstop(CALLER, POLICY))


@pytest.mark.parametrize("message", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_member_imitating_a_judged_one_is_refused_in_a_json_body(message):
    with pytest.raises(ResponseFilterFailed, match="imitates"):
        filter_response_body(
            json.dumps([message]).encode(), [], backstop=list_backstop(CALLER, POLICY)
        )


@pytest.mark.parametrize("message", ATTACKS.values(), ids=ATTACKS.keys())
def test_a_member_imitating_a_judged_one_never_leaves_an_event_stream(message):
    sse = SseFilter(PendingLists(), backstop=list_backstop(CALLER, POLICY))
    out = sse.feed(b"data: " + json.dumps(message).encode() + b"\n\n")
    assert out == b""


@pytest.mark.parametrize("message", TWINS.values(), ids=TWINS.keys())
def test_the_plain_spelling_passes(message):
    sse = SseFilter(PendingLists(), backstop=list_backstop(CALLER, POLICY))
    out = sse.feed(b"data: " + json.dumps(message).encode() + b"\n\n")
    assert [json.loads(line[6:]) for line in out.splitlines() if line] == [message]


def _task_check():
    """The content check a sidecar puts on a caller's MCP answers (tasks claimed for it)."""
    request = InboundRequest(
        caller=AppIdentity("public", "default", CALLER),
        callee=AppIdentity("public", "default", "mcp-server"),
        verb="POST",
        method="mcp",
        headers={"mcp-protocol-version": "2025-11-25"},
    )
    return content_filter(McpSessions(), request, lambda: POLICY, sid=None)


def test_a_created_task_with_a_task_id_twin_is_refused():
    check = _task_check()
    twin = {"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "mine", "TaskId": "x"}}}
    with pytest.raises(ResponseFilterFailed, match="'TaskId' imitates"):
        check(twin)
    assert check({"jsonrpc": "2.0", "id": 2, "result": {"task": {"taskId": "mine"}}}) is None


def test_a_listed_task_of_the_callers_with_a_task_id_twin_is_refused():
    check = _task_check()
    check({"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "mine"}}})  # claimed
    listed = {"jsonrpc": "2.0", "id": 3, "result": {"tasks": [{"taskId": "mine"}]}}
    assert check(listed) is None  # the twin: its own task passes
    listed["result"]["tasks"][0]["TASKID"] = "another-callers-task"
    with pytest.raises(ResponseFilterFailed, match="'TASKID' imitates"):
        check(listed)
