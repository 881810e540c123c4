"""An exchange judged again under a new policy is judged on policy, not on forgotten state.

The MCP sessions table remembers sessions, tasks and SSE event ids with least-recently-used
bounds: a GET stream resumed from ``Last-Event-ID`` relays new event ids that push out the
one it resumed from, and a caller's newer tasks push out an older task whose ``tasks/result``
is still streaming. That state was the caller's when the request arrived, and no policy can
change whose it was; judging it again on every policy change would cut a stream the new policy
still allows. A policy that refuses the stream still cuts it.
"""

from __future__ import annotations

import json

from sidecar.judge import Forward, InboundJudge, InboundSite
from sidecar.pipeline import InboundPolicy, McpRoute
from sidecar.proxy.mcp_route import McpSessions
from tests.unit.test_judge_inbound import (
    CALLER,
    ME,
    NOW,
    ROUTE,
    TOOLS,
    Policies,
    head,
    judge_head,
    rejudge,
)

RESUMED = [
    (b"accept", b"text/event-stream"),
    (b"mcp-session-id", b"s-1"),
    (b"last-event-id", b"e-1"),
]


def _judge(policies: Policies) -> InboundJudge:
    # Small tables: two event ids and two tasks per caller, so two newer ones forget the first.
    sessions = McpSessions(events_per_caller=2, tasks_per_caller=2)
    return InboundJudge(InboundSite(ME, 8000), policies, sessions, lambda: None)


def _resumed_stream(policies: Policies):
    judge = _judge(policies)
    judge.sessions.claim(CALLER, "s-1")
    judge.sessions.saw_event(CALLER, "s-1", "e-1")
    request = head(b"GET", b"/mcp", RESUMED)
    assert isinstance(judge_head(judge, request), Forward)
    for event_id in ("e-2", "e-3"):  # the stream relays on: e-1 is forgotten
        judge.sessions.saw_event(CALLER, "s-1", event_id)
    assert judge.sessions.event_owner("s-1", "e-1") is None
    return judge, request


def test_a_resumed_stream_whose_resume_id_was_forgotten_survives_a_policy_that_allows_it():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, request = _resumed_stream(policies)
    policies.now = InboundPolicy(version="2", mcp=ROUTE)
    assert rejudge(judge, request) is None


def test_twin_a_resumed_stream_is_refused_once_its_caller_holds_no_grant():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, request = _resumed_stream(policies)
    policies.now = InboundPolicy(version="2", mcp=McpRoute("mcp", TOOLS.deny_all("x"), "x"))
    refusal = rejudge(judge, request)
    assert refusal is not None and refusal.reason == "session_refused"


def _task_result(task_id: str) -> bytes:
    message = {"jsonrpc": "2.0", "id": 3, "method": "tasks/result", "params": {"taskId": task_id}}
    return json.dumps(message).encode()


def test_a_task_result_stream_whose_task_was_forgotten_survives_a_policy_that_allows_it():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge = _judge(policies)
    judge.sessions.claim(CALLER, "s-1")
    judge.sessions.claim_task(CALLER, "s-1", "t-1")
    body = _task_result("t-1")
    headers = [(b"content-type", b"application/json"), (b"mcp-protocol-version", b"2025-11-25")]
    headers.append((b"mcp-session-id", b"s-1"))
    request = head(b"POST", b"/mcp", headers, body)
    assert isinstance(judge.body(judge_head(judge, request), body, NOW), Forward)
    for task_id in ("t-2", "t-3"):  # newer tasks: t-1 is forgotten
        judge.sessions.claim_task(CALLER, "s-1", task_id)
    assert judge.sessions.task_owner("s-1", "t-1") is None
    policies.now = InboundPolicy(version="2", mcp=ROUTE)
    assert rejudge(judge, request, body) is None


def test_judging_again_neither_touches_nor_creates_session_state():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, request = _resumed_stream(policies)
    judge.sessions.end(CALLER, "s-1")  # forgotten: its pending filters too
    assert judge.sessions.counts() == (0, 0, 0)
    assert rejudge(judge, request) is None
    assert judge.sessions.counts() == (0, 0, 0) and judge.sessions.event_count() == 0
