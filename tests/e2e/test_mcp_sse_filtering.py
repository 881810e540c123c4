"""Response filtering through two real sidecars, against a scripted upstream (no SDK).

``fake_mcp_upstream`` answers each ``tools/list`` with ``add``, ``echo`` and
``get_weather_alert`` in the shape a scenario asks for; the caller holds ``add`` and ``echo``.
Whatever the shape — SSE with other traffic around the list, broken events, a broken JSON body,
pages, a response resumed on a later GET stream — the caller must get the filtered list or an
error, never the unfiltered one (ToolHive #5257 passed the whole reply on one bad event).
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from sidecar.mcp import parse_stream
from tests._support.fake_mcp_upstream import (
    GRANTED_URI,
    MALFORMED,
    NOTIFICATION,
    SECRET_URI,
    SERVER_REQUEST,
    TOOLS,
    post_answer,
    resource_updated,
)
from tests._support.mcp_mesh import CLIENT_ID, invoke_url

pytestmark = pytest.mark.e2e

SERVER_ID = "fake-upstream"
HIDDEN = b"get_weather_alert"
FLOOD = 4096  # sidecar.proxy.mcp_route.MAX_SESSIONS
FLOOD_HEADERS = {
    "accept": "text/event-stream",
    "mcp-protocol-version": "2025-11-25",
    "last-event-id": "none",
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class Upstream:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=15)

    def list_tools(self, scenario: str, request_id=1, version="2025-06-18", session=None):
        headers = {**ACCEPT, "mcp-protocol-version": version}
        if session:
            headers["mcp-session-id"] = session
        body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": {}}
        return self.http.post(self.url, params={"scenario": scenario}, json=body, headers=headers)

    def open_session(self, version="2025-11-25") -> str:
        """A session the server issued to this caller (the sidecar records the owner)."""
        headers = {**ACCEPT, "mcp-protocol-version": version}
        body = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {}}
        response = self.http.post(self.url, json=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.headers["mcp-session-id"]

    def resume(self, session: str, last_event_id: str, version="2025-11-25"):
        headers = {
            "accept": "text/event-stream",
            "mcp-protocol-version": version,
            "mcp-session-id": session,
            "last-event-id": last_event_id,
        }
        return self.http.get(self.url, headers=headers)


@pytest.fixture(scope="module")
def upstream(mcp_mesh):
    fake = mcp_mesh.fake_upstream("fake-upstream")
    mcp_mesh.sidecar(SERVER_ID, app_port=fake.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.tm("mcpserver", "create", SERVER_ID)
    mcp_mesh.grant(SERVER_ID, CLIENT_ID, "add,echo")
    upstream = Upstream(invoke_url(client, SERVER_ID))
    yield upstream
    upstream.http.close()


def filtered_list(request_id, **extra) -> dict:
    tools = [t for t in TOOLS if t["name"] in ("add", "echo")]
    return {"jsonrpc": "2.0", "id": request_id, "result": {"tools": tools, **extra}}


def messages(response: httpx.Response) -> list:
    """The JSON-RPC messages on a stream; priming events (an id, empty data) carry none."""
    return [json.loads(e.data) for e in parse_stream(response.content) if e.data.strip()]


def raw_event(message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return b"event: message\ndata: " + data + b"\n\n"


# --- SSE on the POST stream -------------------------------------------------------------------


def test_sse_other_messages_pass_unchanged_and_the_list_is_filtered(upstream):
    response = upstream.list_tools("sse-mixed")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    # Byte for byte: the notification and the server's request are not the sidecar's business.
    assert response.content.startswith(raw_event(NOTIFICATION) + raw_event(SERVER_REQUEST))
    events = parse_stream(response.content)
    got = [json.loads(e.data) for e in events[:3]]
    assert got == [NOTIFICATION, SERVER_REQUEST, filtered_list(1)]
    # What follows the filtered list: see test_sse_malformed_event_after_the_list_never_passes.
    assert HIDDEN not in b"".join(e.data for e in events[:3])


def test_sse_resource_update_about_an_ungranted_uri_never_reaches_the_caller(upstream, mcp_mesh):
    mcp_mesh.tm("mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
                "--allow-resources", GRANTED_URI, "--wait")  # fmt: skip
    response = upstream.list_tools("sse-resource-updates", request_id=9)
    assert response.status_code == 200
    # The server announced both updates; the caller may read only one of the two URIs.
    assert SECRET_URI.encode() not in response.content, response.content
    assert messages(response) == [resource_updated(GRANTED_URI), filtered_list(9)]


def test_json_batch_body_loses_a_resource_update_the_caller_may_not_see(upstream):
    headers = {**ACCEPT, "mcp-protocol-version": "2025-03-26"}
    call = {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "add", "arguments": {}}}  # fmt: skip
    response = upstream.http.post(
        upstream.url, params={"scenario": "json-batch-resource-update"}, json=call, headers=headers
    )
    assert response.status_code == 200, response.text
    assert SECRET_URI.encode() not in response.content, response.content
    # The twin: the answer itself, which holds no list, is passed on.
    assert response.json() == [{"jsonrpc": "2.0", "id": 4, "result": {"content": []}}]


def test_sse_members_a_case_insensitive_client_would_read_never_pass(upstream, mcp_mesh):
    # Go's encoding/json reads "Method" as method and the last of "uri"/"URI" as the uri.
    mcp_mesh.tm("mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
                "--allow-resources", GRANTED_URI, "--wait")  # fmt: skip
    _, sent = post_answer("sse-case-twins", 6, None)
    assert sent.count(SECRET_URI.encode()) == 2  # what the server sends: two spellings of it
    call = {"jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {"name": "add", "arguments": {}}}  # fmt: skip
    headers = {**ACCEPT, "mcp-protocol-version": "2025-06-18"}
    response = upstream.http.post(
        upstream.url, params={"scenario": "sse-case-twins"}, json=call, headers=headers
    )
    assert response.status_code == 200, response.text
    assert SECRET_URI.encode() not in response.content, response.content
    # The twin: the same update spelled plainly, and the answer, pass.
    answer = {"jsonrpc": "2.0", "id": 6, "result": {"content": []}}
    assert messages(response) == [resource_updated(GRANTED_URI), answer]


def test_json_list_with_a_case_twin_list_member_is_withheld(upstream):
    _, sent = post_answer("json-list-case-twin", 8, None)
    assert HIDDEN in sent  # the server sends the whole list under "Tools"
    response = upstream.list_tools("json-list-case-twin", request_id=8)
    assert response.status_code == 502, response.text
    assert HIDDEN not in response.content
    assert "'Tools' imitates" in response.json()["error"]["message"]
    # The twin: the same list without the twin member is filtered and passed.
    assert upstream.list_tools("json-page", request_id=2).json() == filtered_list(
        2, nextCursor="page-2"
    )


def test_sse_malformed_event_before_the_list_withholds_the_rest(upstream):
    response = upstream.list_tools("sse-malformed-first", request_id=5)
    assert response.status_code == 200
    assert HIDDEN not in response.content, response.content
    got = messages(response)
    assert len(got) == 1 and got[0]["id"] == 5
    assert got[0]["error"]["code"] == -32603
    assert "upstream response withheld" in got[0]["error"]["message"]


def test_sse_list_page_keeps_next_cursor(upstream):
    response = upstream.list_tools("sse-page", request_id="p1")
    assert messages(response) == [filtered_list("p1", nextCursor="page-2")]


# --- JSON bodies ------------------------------------------------------------------------------


def test_json_list_page_keeps_next_cursor(upstream):
    response = upstream.list_tools("json-page", request_id=2)
    assert response.status_code == 200
    assert response.json() == filtered_list(2, nextCursor="page-2")
    assert response.headers["cache-control"] == "private, no-store"


def test_json_list_response_that_is_not_json_is_withheld_as_502(upstream):
    response = upstream.list_tools("json-invalid", request_id=3)
    assert response.status_code == 502
    assert MALFORMED not in response.content and HIDDEN not in response.content
    error = response.json()
    assert error["id"] == 3 and error["error"]["code"] == -32603
    assert error["error"]["message"].startswith("upstream response withheld: ")


def test_json_list_response_with_a_rounded_id_is_filtered_by_content(upstream):
    # A JavaScript server echoes 2**53 + 1 as 2**53: the response answers no pending request,
    # and is cut down by what it holds (a list), like any list in any response.
    response = upstream.list_tools("json-js-id", request_id=2**53 + 1)
    assert response.status_code == 200
    assert HIDDEN not in response.content
    assert response.json()["result"]["tools"] == filtered_list(1)["result"]["tools"]


def test_sse_list_response_with_a_rounded_id_is_not_passed_unfiltered(upstream):
    response = upstream.list_tools("sse-js-id", request_id=2**53 + 1)
    assert HIDDEN not in response.content, response.content


# --- the list after it was answered -----------------------------------------------------------


def test_sse_malformed_event_after_the_list_never_passes(upstream):
    response = upstream.list_tools("sse-mixed", request_id=6)
    assert MALFORMED not in response.content, response.content


# --- resumption (2025-11-25) ------------------------------------------------------------------


def test_list_response_resumed_on_a_get_stream_is_filtered(upstream):
    session = upstream.open_session()
    cut = upstream.list_tools("resume", request_id=7, version="2025-11-25", session=session)
    assert cut.status_code == 200 and messages(cut) == []
    resumed = upstream.resume(session, f"{session}-0")
    assert resumed.status_code == 200
    assert HIDDEN not in resumed.content, resumed.content
    assert messages(resumed) == [filtered_list(7)]
    events = parse_stream(resumed.content)
    assert events[0].id == f"{session}-1"  # the event id survives, so the client can resume


def test_resumed_stream_loses_a_hidden_update_and_its_id_resumes_nothing(upstream, mcp_mesh):
    mcp_mesh.tm("mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
                "--allow-resources", GRANTED_URI, "--wait")  # fmt: skip
    session = upstream.open_session()
    cut = upstream.list_tools("resume-updates", request_id=5, version="2025-11-25", session=session)
    assert cut.status_code == 200 and messages(cut) == []
    resumed = upstream.resume(session, f"{session}-0")
    assert resumed.status_code == 200
    assert SECRET_URI.encode() not in resumed.content, resumed.content
    assert messages(resumed) == [resource_updated(GRANTED_URI), filtered_list(5)]
    assert [e.id for e in parse_stream(resumed.content)] == [f"{session}-2", f"{session}-3"]
    # The left-out event's id was never the caller's: resuming from it is refused, so the
    # server's store cannot be asked what follows it; the twin, an id it was given, resumes.
    assert upstream.resume(session, f"{session}-1").status_code == 404
    again = upstream.resume(session, f"{session}-2")
    assert again.status_code == 200 and messages(again) == [filtered_list(5)]


def test_priming_event_does_not_break_the_list(upstream):
    session = upstream.open_session()
    response = upstream.list_tools(
        "resume-priming", request_id=8, version="2025-11-25", session=session
    )
    assert HIDDEN not in response.content
    assert messages(response)[-1] == filtered_list(8)


def test_replayed_list_response_is_filtered_again(upstream):
    session = upstream.open_session()
    first = upstream.list_tools("resume-delivered", request_id=9, version="2025-11-25",
                                session=session)  # fmt: skip
    assert messages(first) == [NOTIFICATION, filtered_list(9)]
    replay = upstream.resume(session, f"{session}-0")
    assert replay.status_code == 200
    assert HIDDEN not in replay.content, replay.content


def test_pending_list_survives_a_flood_of_new_sessions(upstream):
    session = upstream.open_session()
    cut = upstream.list_tools("resume", request_id=11, version="2025-11-25", session=session)
    assert cut.status_code == 200 and messages(cut) == []

    def flood(worker: int) -> None:
        with httpx.Client(timeout=15) as http:
            for n in range(FLOOD // 8):
                headers = {**FLOOD_HEADERS, "mcp-session-id": f"flood-{worker}-{n}"}
                assert http.get(upstream.url, headers=headers).status_code == 404

    threads = [threading.Thread(target=flood, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    resumed = upstream.resume(session, f"{session}-0")
    assert resumed.status_code == 200
    assert HIDDEN not in resumed.content, resumed.content
