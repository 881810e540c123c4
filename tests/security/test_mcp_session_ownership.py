"""#10.5: sessions, streams and tasks belong to the caller that opened them.

Behind a sidecar every caller reaches the MCP server from the same place, so an
``Mcp-Session-Id`` (or a task id) is all that tells one caller's conversation from another's.
The review's attacks: another caller DELETEd a victim's session, and in JSON mode received a
victim's tool result. Here the victim (``default/mcp-client``) opens a session on the official
SDK server; an intruder that holds grants of its own (``default/intruder``) and the victim's App
ID in another namespace (``dev/mcp-client``) try to POST in it, open or resume its GET stream and
DELETE it. Each gets the 404 of an unknown session and the server's request log holds nothing of
theirs; the victim's own use of the session (the twin) works. Tasks run against the scripted
upstream, which — like any server trusting its one client — answers for any task id.
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
import yaml

from sidecar.mcp import parse_stream
from tests._support.mcp_attack import Caller, call, request, sidecar_in
from tests._support.mcp_mesh import RequestLog

pytestmark = pytest.mark.e2e

SDK_ID = "sdk-server"
SSE_ID = "sdk-sse-server"
TASKS_ID = "task-server"
VICTIM, INTRUDER = "mcp-client", "intruder"
V3 = "2025-11-25"


@pytest.fixture(scope="module")
def world(mcp_mesh):
    sdk, sdk_log = mcp_mesh.logging_server("sdk-server", mode="json", stateless=False)
    task_log = RequestLog(mcp_mesh.root / "tasks.requests.jsonl")
    fake = mcp_mesh.procs.start(
        "task-upstream",
        [sys.executable, "-m", "tests._support.fake_mcp_upstream"],
        env={"MCP_REQUEST_LOG": str(task_log.path)},
    )
    mcp_mesh.sidecar(SDK_ID, app_port=sdk.ready["port"])
    mcp_mesh.sidecar(TASKS_ID, app_port=fake.ready["port"])
    procs = {
        "victim": sidecar_in(mcp_mesh, VICTIM, "default"),
        "intruder": sidecar_in(mcp_mesh, INTRUDER, "default"),
        "dev": sidecar_in(mcp_mesh, VICTIM, "dev"),
    }
    apply_grants(mcp_mesh, (SDK_ID, TASKS_ID), (VICTIM, INTRUDER, f"dev/{VICTIM}"))
    sdk_callers = {
        "victim": Caller(procs["victim"], SDK_ID),
        "intruder": Caller(procs["intruder"], SDK_ID),
        "dev": Caller(procs["dev"], f"{SDK_ID}.default"),
    }
    task_callers = {
        "victim": Caller(procs["victim"], TASKS_ID),
        "intruder": Caller(procs["intruder"], TASKS_ID),
        "dev": Caller(procs["dev"], f"{TASKS_ID}.default"),
    }
    yield sdk_callers, sdk_log, task_callers, task_log
    for caller in (*sdk_callers.values(), *task_callers.values()):
        caller.close()


@pytest.fixture(scope="module")
def sse_world(mcp_mesh, world):
    """The SDK server in event-stream mode with resumability (2025-11-25 event store)."""
    server, log = mcp_mesh.logging_server(
        "sdk-sse-server", mode="sse", stateless=False, event_store=True
    )
    mcp_mesh.sidecar(SSE_ID, app_port=server.ready["port"])
    apply_grants(mcp_mesh, (SSE_ID,), (VICTIM, INTRUDER))
    procs = {p.name: p for p in mcp_mesh.procs.procs}
    callers = {
        "victim": Caller(procs[f"sidecar-default.{VICTIM}"], SSE_ID),
        "intruder": Caller(procs[f"sidecar-default.{INTRUDER}"], SSE_ID),
    }
    yield callers, log
    for caller in callers.values():
        caller.close()


def apply_grants(mcp_mesh, servers, callers) -> None:
    """One ``apply -f`` (which also registers the servers): each caller may use add and echo."""
    entries = []
    for who in callers:
        namespace, _, app_id = who.rpartition("/")
        entries.append({"appID": app_id, **({"namespace": namespace} if namespace else {})})
    documents = [
        {
            "apiVersion": "trustmesh.dev/v1alpha1",
            "kind": "MCPServerAccessPolicy",
            "metadata": {"name": server},
            "spec": {
                "mcpServerRef": server,
                "rules": [
                    {
                        "callers": entries,
                        "grants": [{"capability": "tools", "names": ["add", "echo"]}],
                    }
                ],
            },
        }
        for server in servers
    ]
    path = mcp_mesh.root / f"policies-{'-'.join(servers)}.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    mcp_mesh.tm("apply", "-f", str(path), "--wait")


def from_caller(log: RequestLog, namespace: str, app_id: str) -> list[dict]:
    """The requests the server received from ``namespace/app_id`` (the sidecar's headers)."""
    out = []
    for entry in log.entries():
        headers = dict((k.lower(), v) for k, v in entry["headers"])
        if (headers.get("dapr-caller-app-id"), headers.get("dapr-caller-namespace")) == (
            app_id,
            namespace,
        ):
            out.append({**entry, "headers": headers})
    return out


def in_session(entries: list[dict], session: str) -> list[dict]:
    return [e for e in entries if e["headers"].get("mcp-session-id") == session]


def not_found(response) -> dict:
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert error["message"] == "Session not found", error
    return response.json()


def ran(response, text: str) -> None:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["content"][0]["text"] == text, result


@pytest.mark.parametrize("attacker", ["intruder", "dev"])
def test_another_caller_cannot_post_stream_resume_or_delete_a_victims_session(world, attacker):
    callers, log, _, _ = world
    victim, intruder = callers["victim"], callers[attacker]
    session = victim.initialize(V3)
    theft = call(f"steal-{attacker}", "add", {"a": 1, "b": 1})
    not_found(intruder.post(theft, version=V3, session=session))
    assert intruder.stream_status(session) == 404
    assert intruder.stream_status(session, {"last-event-id": "0"}) == 404
    not_found(intruder.delete(session))
    # The twin: the victim's session is untouched and still its own.
    ran(victim.post(call("own-1", "add", {"a": 2, "b": 3}), version=V3, session=session), "5")
    assert victim.stream_status(session) in (200, 405)  # JSON-mode servers may refuse streams
    assert victim.delete(session).status_code == 200
    namespace, app_id = ("dev", VICTIM) if attacker == "dev" else ("default", INTRUDER)
    assert in_session(from_caller(log, namespace, app_id), session) == []
    assert [e["method"] for e in in_session(from_caller(log, "default", VICTIM), session)][
        -1
    ] == "DELETE"
    # After the owner ended it, the session is gone for everyone, the owner included.
    not_found(victim.post(call("own-2", "add", {"a": 1, "b": 1}), version=V3, session=session))


def test_a_forged_session_id_never_reaches_the_server_and_reveals_nothing(world):
    callers, log, _, _ = world
    victim_session = callers["victim"].initialize(V3)
    forged = "f" * 32
    unknown = not_found(callers["intruder"].post(request("f1", "tools/list"), version=V3,
                                                 session=forged))  # fmt: skip
    others = not_found(callers["intruder"].post(request("f1", "tools/list"), version=V3,
                                                session=victim_session))  # fmt: skip
    assert unknown == others  # the same answer: no oracle for which ids are live
    assert in_session(log_entries(log), forged) == []
    # The twin: the intruder's own session works.
    own = callers["intruder"].initialize(V3)
    response = callers["intruder"].post(request("f2", "tools/list"), version=V3, session=own)
    assert sorted(t["name"] for t in response.json()["result"]["tools"]) == ["add", "echo"]


def log_entries(log: RequestLog) -> list[dict]:
    return [{**e, "headers": dict((k.lower(), v) for k, v in e["headers"])} for e in log.entries()]


def task_call(id_) -> dict:
    message = call(id_, "add", {"a": 1, "b": 2})
    message["params"]["task"] = {"ttl": 60000}
    return message


def bodies_naming(log: RequestLog, task_id: str) -> list[dict]:
    out = []
    for entry in log.entries():
        body = base64.b64decode(entry["body_b64"])
        if task_id.encode() in body:
            out.append({**entry, "body": json.loads(body)})
    return out


@pytest.mark.parametrize("attacker", ["intruder", "dev"])
@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel"])
def test_another_caller_cannot_touch_a_victims_task(world, attacker, method):
    _, _, callers, log = world
    created = callers["victim"].post(task_call(f"t-{attacker}-{method}"), version=V3)
    task_id = created.json()["result"]["task"]["taskId"]
    attack = callers[attacker].post(request("steal", method, {"taskId": task_id}), version=V3)
    assert attack.status_code == 404, attack.text
    assert attack.json()["error"] == {"code": -32602, "message": f"task {task_id!r} not found"}
    twin = callers["victim"].post(request("mine", method, {"taskId": task_id}), version=V3)
    assert twin.status_code == 200, twin.text
    assert [e["body"]["method"] for e in bodies_naming(log, task_id)] == [method]  # the twin only


def test_tasks_list_shows_each_caller_only_its_own_tasks(world):
    _, _, callers, _log = world
    mine = callers["victim"].post(task_call("list-v"), version=V3).json()["result"]["task"]
    theirs = callers["intruder"].post(task_call("list-i"), version=V3).json()["result"]["task"]
    seen = {
        who: {t["taskId"] for t in
              callers[who].post(request("l", "tasks/list"), version=V3).json()["result"]["tasks"]}
        for who in ("victim", "intruder", "dev")
    }  # fmt: skip
    assert mine["taskId"] in seen["victim"] and theirs["taskId"] not in seen["victim"]
    assert theirs["taskId"] in seen["intruder"] and mine["taskId"] not in seen["intruder"]
    assert not seen["dev"] & {mine["taskId"], theirs["taskId"]}


def test_tasks_list_spelled_in_capitals_never_shows_another_callers_task(world):
    # The server lists every task under "Tasks"/"TaskId": no lower-case key for the byte scan
    # to see, and no "tasks" member for the cut; a case-insensitive client reads both.
    _, _, callers, log = world
    theirs = callers["intruder"].post(task_call("caps-i"), version=V3).json()["result"]["task"]
    victim = callers["victim"]
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": V3}
    attack = victim.http.post(victim.url, params={"scenario": "tasks-case-twin"},
                              json=request("caps", "tasks/list"), headers=headers)  # fmt: skip
    assert [m for m in map(json.loads, log.bodies()) if m.get("id") == "caps"]  # it got there
    assert attack.status_code == 502, attack.text  # the server answered; the answer is withheld
    assert theirs["taskId"].encode() not in attack.content
    assert "'Tasks' imitates" in attack.json()["error"]["message"]
    twin = victim.post(request("plain", "tasks/list"), version=V3).json()["result"]["tasks"]
    assert theirs["taskId"] not in {t["taskId"] for t in twin}


def test_task_status_of_another_callers_task_never_reaches_a_caller(world):
    # A server that announces every task's status on every stream, as it lists every task.
    _, _, callers, _log = world
    theirs = callers["intruder"].post(task_call("st-i"), version=V3).json()["result"]["task"]
    mine = callers["victim"].post(task_call("st-v"), version=V3).json()["result"]["task"]
    victim = callers["victim"]
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": V3}
    sent = victim.http.post(victim.url, params={"scenario": "sse-task-status"},
                            json=call("st", "add", {"a": 1, "b": 2}), headers=headers)  # fmt: skip
    assert sent.status_code == 200, sent.text
    assert theirs["taskId"].encode() not in sent.content, sent.content
    got = [json.loads(e.data) for e in parse_stream(sent.content)]
    statuses = [
        m["params"]["taskId"] for m in got if m.get("method") == "notifications/tasks/status"
    ]
    assert mine["taskId"] in statuses  # the twin: its own task's status passes
    assert got[-1] == {"jsonrpc": "2.0", "id": "st", "result": {"content": []}}


def test_a_task_id_this_sidecar_never_saw_created_is_refused(world):
    _, _, callers, log = world
    forged = "0123456789abcdef"
    response = callers["victim"].post(request("g", "tasks/get", {"taskId": forged}), version=V3)
    assert response.status_code == 404
    assert bodies_naming(log, forged) == []


def test_resuming_a_victims_event_stream_is_refused_and_the_owner_resumes(sse_world):
    sse_callers, log = sse_world
    victim, intruder = sse_callers["victim"], sse_callers["intruder"]
    session = victim.initialize(V3)
    posted = victim.post(call("sse-1", "echo", {"message": "secret result"}), version=V3,
                         session=session)  # fmt: skip
    assert posted.headers["content-type"].startswith("text/event-stream")
    event_ids = [e.id for e in parse_stream(posted.content) if e.id]
    assert event_ids, posted.content
    resume = {"last-event-id": event_ids[0]}
    assert intruder.stream_status(session, resume) == 404
    assert b"secret result" in posted.content  # the twin: the owner got its result...
    assert victim.stream_status(session, resume) == 200  # ... and may resume its stream
    intruders = in_session(from_caller(log, "default", INTRUDER), session)
    assert intruders == []
