"""Ownership of sessions and tasks, the content backstop on JSON bodies, and the audit fields of
a verdict: the pure pieces behind #10.1, #10.2 and #10.5."""

from __future__ import annotations

import json

import pytest

from identity import AppIdentity
from sidecar.mcp import PendingLists, filter_response_body, inspect_request, list_backstop
from sidecar.mcp.filtering import may_hold_list
from sidecar.mcp.sessions import McpSessions
from sidecar.pipeline import InboundRequest
from sidecar.proxy import mcp_route
from tests._support.mcp_policies import POLICY, body, req

VICTIM = AppIdentity("public", "default", "analyst-agent")
TWIN_IN_DEV = AppIdentity("public", "dev", "analyst-agent")
OTHER = AppIdentity("public", "default", "reader")
SERVER = AppIdentity("public", "default", "mcp-server")
TOOLS = [{"name": n} for n in ("add", "echo", "rm")]


def inbound(caller: AppIdentity, session: str | None = None) -> InboundRequest:
    headers = {"mcp-session-id": session} if session else {}
    return InboundRequest(caller, SERVER, "POST", "mcp", headers)


# --- ownership -----------------------------------------------------------------------------------


def test_session_belongs_to_its_first_claimant_only():
    sessions = McpSessions()
    assert sessions.claim(VICTIM, "s1")
    assert not sessions.claim(TWIN_IN_DEV, "s1")  # same App ID, other namespace: another caller
    assert sessions.claim(VICTIM, "s1")  # re-issued to its owner: fine
    assert sessions.owner("s1") == VICTIM


@pytest.mark.parametrize("caller", [TWIN_IN_DEV, OTHER])
def test_check_session_owner_refuses_others_like_an_unknown_session(caller):
    sessions = McpSessions()
    sessions.claim(VICTIM, "s1")
    assert mcp_route.check_session_owner(sessions, inbound(VICTIM, "s1")) is None
    assert mcp_route.check_session_owner(sessions, inbound(VICTIM)) is None  # stateless
    theirs = mcp_route.check_session_owner(sessions, inbound(caller, "s1"))
    unknown = mcp_route.check_session_owner(sessions, inbound(caller, "never-issued"))
    for decision in (theirs, unknown):
        assert decision is not None and not decision.allowed and decision.status == 404
    assert theirs.body == unknown.body  # nothing tells the two apart
    assert "another caller" in theirs.message and "unknown" in unknown.message


def test_sessions_are_bounded_per_caller_and_in_total():
    sessions = McpSessions(limit=6, per_caller=3)
    for n in range(5):
        sessions.claim(OTHER, f"flood-{n}")
    assert sessions.counts()[0] == 3  # the flooder pushed out only its own oldest
    sessions.claim(VICTIM, "mine")
    for n in range(5, 20):
        sessions.claim(OTHER, f"flood-{n}")
    assert sessions.owner("mine") == VICTIM
    assert sessions.counts()[0] <= 6


def test_pending_lists_only_for_the_owner_and_forgotten_with_the_session():
    sessions = McpSessions()
    sessions.claim(VICTIM, "s1")
    mine = sessions.get(VICTIM, "s1")
    assert sessions.get(VICTIM, "s1") is mine
    assert sessions.get(OTHER, "s1") is not mine  # a throw-away set, never the victim's
    sessions.end(OTHER, "s1")  # not the owner: nothing happens
    assert sessions.owner("s1") == VICTIM
    sessions.end(VICTIM, "s1")
    assert sessions.owner("s1") is None and sessions.counts() == (0, 0, 0)


def test_tasks_are_per_session_per_caller_and_bounded():
    sessions = McpSessions(task_limit=4, tasks_per_caller=2)
    assert sessions.claim_task(VICTIM, None, "t1")
    assert not sessions.claim_task(OTHER, None, "t1")
    assert sessions.claim_task(OTHER, "s9", "t1")  # another session's "t1" is another task
    sessions.claim_task(VICTIM, None, "t2")
    sessions.claim_task(VICTIM, None, "t3")
    assert sessions.task_owner(None, "t1") is None  # the caller's oldest went first
    assert sessions.task_owner(None, "t3") == VICTIM


def test_tasks_naming_another_callers_task_are_refused_before_the_server():
    sessions = McpSessions()
    sessions.claim_task(VICTIM, None, "t1")
    route = type("Route", (), {"policy": POLICY})()
    message = body(req("tasks/get", {"taskId": "t1"}))
    request = InboundRequest(VICTIM, SERVER, "POST", "mcp", {"mcp-protocol-version": "2025-11-25"})
    assert mcp_route.judge_body(route, request, message, 1 << 20, sessions).allowed
    stolen = InboundRequest(
        TWIN_IN_DEV, SERVER, "POST", "mcp", {"mcp-protocol-version": "2025-11-25"}
    )
    assert not mcp_route.judge_body(route, stolen, message, 1 << 20, sessions).allowed


# --- the content backstop on JSON bodies ----------------------------------------------------------


def listing(id_) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": id_, "result": {"tools": TOOLS}}).encode()


def test_a_list_answering_a_ping_id_is_filtered_by_content():
    backstop = list_backstop(VICTIM, POLICY)
    out = json.loads(filter_response_body(listing("77"), PendingLists(), backstop=backstop))
    assert [t["name"] for t in out["result"]["tools"]] == ["add", "echo"]


def test_a_list_for_the_twin_in_another_namespace_is_emptied():
    backstop = list_backstop(TWIN_IN_DEV, POLICY)
    out = json.loads(filter_response_body(listing(1), PendingLists(), backstop=backstop))
    assert out["result"]["tools"] == []


def test_bodies_without_a_list_pass_byte_for_byte():
    raw = b'{"jsonrpc":"2.0","id":"77","result":{}}'
    assert filter_response_body(raw, PendingLists(), backstop=list_backstop(VICTIM, POLICY)) is raw


@pytest.mark.parametrize(
    "raw",
    [
        listing(1),
        b'{"id":1,"result":{"t\\u006fols":[]}}',  # an escaped key
        listing(1).decode().encode("utf-16"),  # a lenient client would decode this
        b'{"id":1,"result":{"resourceTemplates":[]}}',
        b'{"id":1,"result":{"task":{"taskId":"x"}}}',
    ],
)
def test_the_byte_scan_never_skips_a_body_that_could_hold_a_list(raw):
    assert may_hold_list(raw)


def test_the_byte_scan_skips_plain_tool_results():
    assert not may_hold_list(b'{"jsonrpc":"2.0","id":3,"result":{"content":[]}}')


# --- audit fields -------------------------------------------------------------------------------


def test_verdict_names_methods_items_and_argument_keys_for_allowed_and_denied():
    call = req("tools/call", {"name": "rm", "arguments": {"path": "/etc", "force": True}})
    denied = inspect_request(
        body(call), caller=VICTIM, policy=POLICY, headers={}, negotiated_version=None
    )
    assert not denied.allowed
    assert (denied.mcp_methods, denied.names, denied.arg_keys) == (
        ("tools/call",),
        ("rm",),
        ("path", "force"),
    )
    allowed = inspect_request(
        body(req("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})),
        caller=VICTIM, policy=POLICY, headers={}, negotiated_version=None,
    )  # fmt: skip
    assert allowed.allowed and allowed.names == ("add",) and allowed.arg_keys == ("a", "b")
    assert b"/etc" not in json.dumps(denied.arg_keys).encode()  # keys, never values


def test_a_list_tucked_into_an_error_data_is_filtered_too():
    raw = json.dumps(
        {"jsonrpc": "2.0", "id": 5, "error": {"code": -1, "message": "x", "data": {"tools": TOOLS}}}
    ).encode()
    out = json.loads(
        filter_response_body(raw, PendingLists(), backstop=list_backstop(VICTIM, POLICY))
    )
    assert [t["name"] for t in out["error"]["data"]["tools"]] == ["add", "echo"]


def test_error_pages_pass_but_unreadable_json_that_might_hold_a_list_is_withheld():
    from sidecar.proxy.mcp_route import WithheldResponse, _JsonFilter

    page = b"<html>404: no tools here</html>"
    backstop = list_backstop(VICTIM, POLICY)
    plain_404 = _JsonFilter(PendingLists(), (1,), backstop, status=404, is_json=False)
    assert plain_404.feed(page) == page
    broken = b'{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"rm"}'
    for status, is_json in ((200, True), (200, False), (500, True)):
        with pytest.raises(WithheldResponse):
            _JsonFilter(PendingLists(), (), backstop, status=status, is_json=is_json).feed(broken)
