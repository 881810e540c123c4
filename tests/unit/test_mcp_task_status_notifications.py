"""A server's ``notifications/tasks/status`` reaches a caller only for a task created for it.

The sidecar cuts ``tasks/list`` to the caller's own tasks (tasks are claimed per caller and
session as the server creates them); a server that lists every task to whoever asks announces
every task's status on every stream too, which told a caller the ids and progress of another
caller's tasks.
"""

from __future__ import annotations

import pytest

from identity import AppIdentity
from sidecar.mcp.errors import ResponseFilterFailed
from sidecar.mcp.filtering import DROP
from sidecar.mcp.sessions import McpSessions
from sidecar.pipeline import InboundRequest
from sidecar.proxy.mcp_route import TASK_STATUS, content_filter
from tests._support.mcp_policies import CALLER, POLICY


def _request(app_id: str) -> InboundRequest:
    return InboundRequest(
        caller=AppIdentity("public", "default", app_id),
        callee=AppIdentity("public", "default", "mcp-server"),
        verb="POST",
        method="mcp",
        headers={"mcp-protocol-version": "2025-11-25"},
    )


def status(**params) -> dict:
    return {"jsonrpc": "2.0", "method": TASK_STATUS, "params": {"status": "working", **params}}


@pytest.fixture
def checks():
    sessions = McpSessions()
    mine = content_filter(sessions, _request(CALLER), lambda: POLICY, sid="s1")
    theirs = content_filter(sessions, _request("reader"), lambda: POLICY, sid="s1")
    mine({"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "t-mine"}}})
    theirs({"jsonrpc": "2.0", "id": 1, "result": {"task": {"taskId": "t-theirs"}}})
    other_session = content_filter(sessions, _request(CALLER), lambda: POLICY, sid="s2")
    return mine, other_session


def test_the_status_of_the_callers_own_task_passes(checks):
    mine, _ = checks
    assert mine(status(taskId="t-mine")) is None


@pytest.mark.parametrize(
    "message",
    [
        status(taskId="t-theirs"),  # another caller's task
        status(taskId="t-never-created"),
        status(),  # names no task
        status(taskId=7),
        {"jsonrpc": "2.0", "method": TASK_STATUS, "params": "t-mine"},
    ],
)
def test_the_status_of_a_task_not_the_callers_is_dropped(checks, message):
    mine, _ = checks
    assert mine(message) is DROP


def test_a_task_is_the_callers_only_in_the_session_it_was_created_in(checks):
    _, other_session = checks
    assert other_session(status(taskId="t-mine")) is DROP


def test_a_task_id_case_twin_in_a_status_is_refused(checks):
    mine, _ = checks
    with pytest.raises(ResponseFilterFailed, match="'TaskId' imitates"):
        mine(status(taskId="t-mine", TaskId="t-theirs"))
