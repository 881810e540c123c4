"""A task is bound to the tool whose call created it: its tasks/* are judged by that grant.

The binding lives as long as the task does in the sessions table (forgotten with it, so the
table stays bounded), and a ``tasks/result`` under way is judged again by it when a new policy
is applied.
"""

from __future__ import annotations

import copy
import json

from sidecar.judge import Forward, InboundJudge, InboundSite
from sidecar.mcp import MCPServerAccessPolicy
from sidecar.pipeline import InboundPolicy, McpRoute
from sidecar.proxy.mcp_route import McpSessions
from tests._support import mcp_policies
from tests.unit.test_judge_inbound import (
    CALLER,
    ME,
    NOW,
    ROUTE,
    Policies,
    head,
    judge_head,
    rejudge,
)

HEADERS = [
    (b"content-type", b"application/json"),
    (b"mcp-protocol-version", b"2025-11-25"),
    (b"mcp-session-id", b"s-1"),
]


def _only(tools: list[str]) -> McpRoute:
    """The unit tests' MCP policy, with the caller granted only ``tools``."""
    document = copy.deepcopy(mcp_policies.DOC)
    document["spec"]["rules"][0]["grants"][0]["names"] = tools
    return McpRoute("mcp", MCPServerAccessPolicy.from_document(document), "mcp-server")


def test_a_tasks_tool_is_forgotten_with_the_task():
    sessions = McpSessions(tasks_per_caller=2)
    sessions.claim(CALLER, "s-1")
    sessions.claim_task(CALLER, "s-1", "t-1", "add")
    assert sessions.task_tool("s-1", "t-1") == "add"
    for task_id in ("t-2", "t-3"):  # pushes t-1 out of the caller's quota
        sessions.claim_task(CALLER, "s-1", task_id, "echo")
    assert sessions.task_tool("s-1", "t-1") is None and sessions.task_tool("s-1", "t-3") == "echo"
    sessions.end(CALLER, "s-1")
    assert sessions.task_tool("s-1", "t-3") is None


def _task_result_under_way(policies: Policies):
    judge = InboundJudge(InboundSite(ME, 8000), policies, McpSessions(), lambda: None)
    judge.sessions.claim(CALLER, "s-1")
    judge.sessions.claim_task(CALLER, "s-1", "t-1", "add")
    message = {"jsonrpc": "2.0", "id": 3, "method": "tasks/result", "params": {"taskId": "t-1"}}
    body = json.dumps(message).encode()
    request = head(b"POST", b"/mcp", HEADERS, body)
    assert isinstance(judge.body(judge_head(judge, request), body, NOW), Forward)
    return judge, request, body


def test_a_task_result_under_way_is_refused_when_its_tool_is_revoked():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, request, body = _task_result_under_way(policies)
    policies.now = InboundPolicy(version="2", mcp=_only(["echo"]))
    refusal = rejudge(judge, request, body)
    assert refusal is not None and refusal.reason == "task_tool_not_granted", refusal


def test_twin_a_task_result_under_way_goes_on_when_another_tool_is_revoked():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, request, body = _task_result_under_way(policies)
    policies.now = InboundPolicy(version="2", mcp=_only(["add"]))
    assert rejudge(judge, request, body) is None
