"""#10.2: every list an MCP server returns is filtered, whatever request it claims to answer.

The review's attack: in JSON mode a ``ping`` racing a ``tools/list`` with an aliased id (``"77"``
against ``77``) got the server's full tool list, because only responses to pending list ids were
filtered. Here ``mcp_race_upstream`` makes the race deterministic (each request waits for its
partner, then they swap answers) in every response shape — a JSON body, a JSON array, an event
stream — and the caller, who holds ``add`` and ``echo``, must never see ``get_weather_alert``.
The twin: the same caller's plain ``tools/list`` still returns its two tools. A bounded loop
then runs the real race against the official SDK server in stateful JSON mode: the SDK does
deliver the list on the ping's response there, and leaves the losing request unanswered for
good or fails it with a 500 (so the loop's requests time out quickly, and that server is killed
at the end: it can no longer shut down gracefully).
"""

from __future__ import annotations

import concurrent.futures
import json
import sys

import httpx
import pytest

from tests._support.mcp_attack import Caller, json_messages, request
from tests._support.mcp_mesh import CLIENT_ID, RequestLog

pytestmark = pytest.mark.e2e

RACE_ID = "race-server"
SDK_ID = "sdk-server"
HIDDEN = b"get_weather_alert"
LOOPS = 6
LOOP_TIMEOUT = 1.5  # the SDK never answers the request that lost the race


@pytest.fixture(scope="module")
def world(mcp_mesh):
    log = RequestLog(mcp_mesh.root / "race.requests.jsonl")
    race = mcp_mesh.procs.start(
        "race-upstream",
        [sys.executable, "-m", "tests._support.mcp_race_upstream"],
        env={"MCP_REQUEST_LOG": str(log.path)},
    )
    sdk, _sdk_log = mcp_mesh.logging_server("sdk-server", mode="json", stateless=False)
    mcp_mesh.sidecar(RACE_ID, app_port=race.ready["port"])
    mcp_mesh.sidecar(SDK_ID, app_port=sdk.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    for server in (RACE_ID, SDK_ID):
        mcp_mesh.tm("mcpserver", "create", server)
        mcp_mesh.grant(server, CLIENT_ID, "add,echo")
    callers = {
        RACE_ID: {
            shape: Caller(client, RACE_ID, f"mcp?shape={shape}")
            for shape in ("json", "batch", "sse")
        },
        SDK_ID: Caller(client, SDK_ID, timeout=LOOP_TIMEOUT),
    }
    yield mcp_mesh, callers, log
    for caller in (*callers[RACE_ID].values(), callers[SDK_ID]):
        caller.close()


def race(caller: Caller, list_id, ping_id, version="2025-06-18", session=None):
    """Send tools/list and ping at once; return (list response, ping response), None for a
    request the server never answered."""

    def post(message):
        try:
            return caller.post(message, version=version, session=session)
        except httpx.ReadTimeout:
            return None

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        listed = pool.submit(post, request(list_id, "tools/list"))
        pinged = pool.submit(post, request(ping_id, "ping"))
        return listed.result(), pinged.result()


def tool_names(messages: list) -> list[str]:
    names = []
    for message in messages:
        for tool in message.get("result", {}).get("tools", []):
            names.append(tool["name"])
    return sorted(names)


@pytest.mark.parametrize("shape", ["json", "batch", "sse"])
def test_ping_answered_with_a_racing_tool_list_gets_the_filtered_list(world, shape):
    _mesh, callers, log = world
    caller = callers[RACE_ID][shape]
    version = "2025-03-26" if shape == "batch" else "2025-06-18"
    listed, pinged = race(caller, 77, "77", version=version)
    assert HIDDEN not in pinged.content and HIDDEN not in listed.content, pinged.content
    assert pinged.status_code == 200 and listed.status_code == 200
    # The ping's response carried the list (the swap happened), cut to the caller's grants.
    assert tool_names(json_messages(pinged)) == ["add", "echo"], pinged.content
    # Both requests reached the server: the proof is in what came back, not in a refusal.
    bodies = [json.loads(b) for b in log.bodies()]
    assert {"77", 77} <= {b.get("id") for b in bodies}


def test_twin_plain_tools_list_still_lists_the_granted_tools(world):
    _mesh, callers, _log = world
    response = callers[RACE_ID]["json"].post(request("solo", "tools/list"))
    # Nobody races it: it gets its own (full) list, filtered.
    assert response.status_code == 200, response.content
    assert tool_names(json_messages(response)) == ["add", "echo"]


def test_list_misdelivered_after_a_revoke_is_filtered_by_the_policy_in_force(world):
    mesh, callers, _log = world
    caller = callers[RACE_ID]["json"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The list request is judged now (add, echo granted) and waits for its partner...
        listed = pool.submit(caller.post, request(91, "tools/list"))
        mesh.revoke(RACE_ID, CLIENT_ID, "echo")  # ... then echo is revoked (with --wait)
        pinged = caller.post(request("91", "ping"))
        listed = listed.result()
    try:
        assert tool_names(json_messages(pinged)) == ["add"], pinged.content
        assert b'"echo"' not in pinged.content and HIDDEN not in pinged.content
    finally:
        mesh.grant(RACE_ID, CLIENT_ID, "echo")
    assert listed.status_code == 200


def test_bounded_race_loop_against_the_sdk_server_in_json_mode(world):
    mesh, callers, _log = world
    caller = callers[SDK_ID]
    session = caller.initialize()
    seen = []
    try:
        for n in range(LOOPS):
            listed, pinged = race(caller, 7700 + n, str(7700 + n), version="2025-11-25",
                                  session=session)  # fmt: skip
            for response in (listed, pinged):
                if response is None:
                    continue
                # Whatever the wedged SDK answers (it may also fail with a 500), never the tool.
                assert HIDDEN not in response.content, response.content
                if response.status_code == 200:
                    seen += json_messages(response)
    finally:
        server = next(p for p in mesh.procs.procs if p.name == "sdk-server")
        mesh.procs.procs.remove(server)  # wedged by its own race: no graceful stop possible
        server.popen.kill()
        server.popen.wait()
    assert tool_names(seen).count("add") >= 1 and "get_weather_alert" not in tool_names(seen)
