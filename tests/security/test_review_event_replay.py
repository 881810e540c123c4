"""Review of #10.5: a victim's events replayed into another caller's own session.

The official SDK server keeps one event store for all sessions and resumes a GET stream from
whatever ``Last-Event-ID`` it is given, without checking that the event belongs to the session
that asks. The sidecar checks only that the ``Mcp-Session-Id`` is the caller's, so an intruder
with grants of its own opens *its own* session and resumes it from the *victim's* event id: the
server replays the victim's tool result into the intruder's stream. (The existing test tries
the victim's session id with the victim's event id; this spelling keeps the session honest.)

The twin: the victim resumes its own stream from its own event id and gets its result again.
"""

from __future__ import annotations

import httpx
import pytest

from sidecar.mcp import parse_stream
from tests._support.mcp_attack import Caller, call, sidecar_in
from tests.security.test_mcp_session_ownership import apply_grants, from_caller

pytestmark = pytest.mark.e2e

SSE_ID = "sdk-sse-server"
VICTIM, INTRUDER = "mcp-client", "intruder"
V3 = "2025-11-25"
SECRET = "victim-secret-7f3a"


@pytest.fixture(scope="module")
def world(mcp_mesh):
    server, log = mcp_mesh.logging_server(
        "sdk-sse-server", mode="sse", stateless=False, event_store=True
    )
    mcp_mesh.sidecar(SSE_ID, app_port=server.ready["port"])
    victim = sidecar_in(mcp_mesh, VICTIM, "default")
    intruder = sidecar_in(mcp_mesh, INTRUDER, "default")
    apply_grants(mcp_mesh, (SSE_ID,), (VICTIM, INTRUDER))
    callers = {"victim": Caller(victim, SSE_ID), "intruder": Caller(intruder, SSE_ID)}
    yield callers, log
    for caller in callers.values():
        caller.close()


def read_stream(caller: Caller, session: str, last_event_id: str, until: str) -> str:
    """Open the session's GET stream resumed from ``last_event_id``; read until ``until`` shows
    or the stream goes quiet (an open SSE stream never ends by itself)."""
    headers = {"accept": "text/event-stream", "mcp-protocol-version": V3,
               "mcp-session-id": session, "last-event-id": last_event_id}  # fmt: skip
    seen = b""
    timeout = httpx.Timeout(15, read=3)
    try:
        with caller.http.stream("GET", caller.url, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                return f"status {response.status_code}"
            for chunk in response.iter_raw():
                seen += chunk
                if until.encode() in seen:
                    break
    except httpx.ReadTimeout:
        pass
    return seen.decode("utf-8", "replace")


def victim_event_id(victim: Caller) -> tuple[str, str]:
    session = victim.initialize(V3)
    posted = victim.post(
        call("victim-call", "echo", {"message": SECRET}), version=V3, session=session
    )
    assert posted.headers["content-type"].startswith("text/event-stream"), posted.text
    assert SECRET in posted.text
    ids = [e.id for e in parse_stream(posted.content) if e.id]
    assert ids, posted.content
    return session, ids[0]


def test_victims_last_event_id_is_not_replayed_into_the_victims_own_stream_twin(world):
    callers, _log = world
    session, event_id = victim_event_id(callers["victim"])
    assert SECRET in read_stream(callers["victim"], session, event_id, SECRET)


@pytest.mark.xfail(
    strict=True,
    reason="review: Last-Event-ID is not bound to the caller; the SDK's shared event store "
    "replays a victim's events into an intruder's own session",
)
def test_intruder_resuming_its_own_session_from_a_victims_event_id_gets_nothing(world):
    callers, log = world
    _victim_session, event_id = victim_event_id(callers["victim"])
    own = callers["intruder"].initialize(V3)
    got = read_stream(callers["intruder"], own, event_id, SECRET)
    arrived = [
        e
        for e in from_caller(log, "default", INTRUDER)
        if e["headers"].get("last-event-id") == event_id
    ]
    # The victim's tool result came back to the intruder...
    assert SECRET not in got, got
    # ...because, as the server's own log shows, the resumption from the victim's event
    # reached it.
    assert arrived == [], arrived
