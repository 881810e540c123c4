"""A task's result stays behind the grant of the tool whose call created it.

A tool call may run as a task (2025-11-25): the call returns a task id at once and the result
is fetched later with ``tasks/result``. ``tasks/*`` name only the task id, so the sidecar let
them through for any caller holding some tool grant, once the task was the caller's own. A
caller whose grant of ``add`` was revoked while its ``add`` task ran could still fetch the
task's result with ``tasks/result``, so long as it kept any other tool (the same tool result
that a revoked grant cuts from a streamed call). The sidecar now remembers which tool created
each task and judges ``tasks/*`` by that tool's grant; the server's own request log shows the
refused request never reached it.

Twin: with another tool's grant revoked instead, the caller fetches its task's result.
"""

from __future__ import annotations

import sys

import pytest

from tests._support.mcp_attack import Caller, request
from tests._support.mcp_mesh import CLIENT_ID, RequestLog
from tests.security.test_mcp_session_ownership import V3, bodies_naming, task_call

pytestmark = pytest.mark.e2e

SERVER = "task-tools"


@pytest.fixture(scope="module")
def tasks(mcp_mesh):
    log = RequestLog(mcp_mesh.root / "task-tools.requests.jsonl")
    fake = mcp_mesh.procs.start(
        "task-tools-upstream",
        [sys.executable, "-m", "tests._support.fake_mcp_upstream"],
        env={"MCP_REQUEST_LOG": str(log.path)},
    )
    mcp_mesh.sidecar(SERVER, app_port=fake.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.register(SERVER)
    caller = Caller(client, SERVER)
    yield mcp_mesh, caller, log
    caller.close()


def _result_after_revoking(tasks, revoke: str, name: str):
    """Create an ``add`` task as the caller, revoke its grant of ``revoke``, then ask for the
    task's result: (the answer, the task id)."""
    mesh, caller, _ = tasks
    mesh.grant(SERVER, CLIENT_ID, "add,echo")
    created = caller.post(task_call(name), version=V3)
    assert created.status_code == 200, created.text
    task_id = created.json()["result"]["task"]["taskId"]
    mesh.revoke(SERVER, CLIENT_ID, revoke)
    return caller.post(request("r", "tasks/result", {"taskId": task_id}), version=V3), task_id


def test_a_tasks_result_is_refused_once_the_tool_that_created_it_is_revoked(tasks):
    answer, task_id = _result_after_revoking(tasks, "add", "revoked-add")
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert error["code"] == -32003 and "'add'" in error["message"], error
    assert [e["body"]["method"] for e in bodies_naming(tasks[2], task_id)] == []  # never sent


def test_twin_a_tasks_result_arrives_when_another_tools_grant_is_revoked(tasks):
    answer, task_id = _result_after_revoking(tasks, "echo", "revoked-echo")
    assert answer.status_code == 200, answer.text
    assert f"result of {task_id}" in answer.text
    assert [e["body"]["method"] for e in bodies_naming(tasks[2], task_id)] == ["tasks/result"]
