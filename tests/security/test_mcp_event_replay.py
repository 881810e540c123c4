"""Review of #10.5: a victim's events replayed into another caller's own session.

The official SDK server keeps one event store for all sessions and resumes a GET stream from
whatever ``Last-Event-ID`` it is given, without checking that the event belongs to the session
that asks. The sidecar checks only that the ``Mcp-Session-Id`` is the caller's, so an intruder
with grants of its own opens *its own* session and resumes it from the *victim's* event id: the
server replays the victim's tool result into the intruder's stream. (The existing test tries
the victim's session id with the victim's event id; this spelling keeps the session honest.)

The twin: the victim resumes its own stream from its own event id and gets its result again.
The fix: the sidecar admits a ``Last-Event-ID`` only if it relayed that event id to the same
caller in the same session; the neighbouring spellings (no session, a POST carrying the header,
the header twice, the victim's own id in another of its sessions) are refused the same way.
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


def read_stream(caller: Caller, session: str | None, last_event_id, until: str) -> str:
    """Open the session's GET stream resumed from ``last_event_id`` (one id, or a list sent as
    repeated headers); read until ``until`` shows or the stream goes quiet (an open SSE stream
    never ends by itself)."""
    ids = [last_event_id] if isinstance(last_event_id, str) else last_event_id
    headers = [("accept", "text/event-stream"), ("mcp-protocol-version", V3)]
    headers += [("mcp-session-id", session)] if session is not None else []
    headers += [("last-event-id", i) for i in ids]
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


def victim_event_id(victim: Caller, message: str = SECRET) -> tuple[str, str]:
    """Open a session, make a call that answers on an event stream; its first event id."""
    session = victim.initialize(V3)
    posted = victim.post(
        call("victim-call", "echo", {"message": message}), version=V3, session=session
    )
    assert posted.headers["content-type"].startswith("text/event-stream"), posted.text
    assert message in posted.text
    ids = [e.id for e in parse_stream(posted.content) if e.id]
    assert ids, posted.content
    return session, ids[0]


def resumed_from(log, who: str, event_id: str) -> list[dict]:
    """The requests from ``default/who`` that reached the server carrying ``event_id``."""
    return [
        e
        for e in from_caller(log, "default", who)
        if event_id in e["headers"].get("last-event-id", "")
    ]


def test_victim_resuming_its_own_session_from_its_own_event_id_gets_its_result_twin(world):
    callers, _log = world
    session, event_id = victim_event_id(callers["victim"])
    assert SECRET in read_stream(callers["victim"], session, event_id, SECRET)


def test_intruder_resuming_its_own_session_from_a_victims_event_id_gets_nothing(world):
    callers, log = world
    _victim_session, event_id = victim_event_id(callers["victim"])
    own = callers["intruder"].initialize(V3)
    got = read_stream(callers["intruder"], own, event_id, SECRET)
    # Refused like an unknown session, and, as the server's own log shows, never forwarded.
    assert got == "status 404", got
    assert resumed_from(log, INTRUDER, event_id) == []


def test_intruder_resuming_its_own_session_from_its_own_event_id_still_works_twin(world):
    callers, _log = world
    session, event_id = victim_event_id(callers["intruder"], "intruder-own-5c1d")
    assert "intruder-own-5c1d" in read_stream(
        callers["intruder"], session, event_id, "intruder-own-5c1d"
    )


def test_intruder_without_a_session_or_on_a_post_cannot_resume_from_a_victims_event(world):
    callers, log = world
    _victim_session, event_id = victim_event_id(callers["victim"])
    intruder = callers["intruder"]
    assert read_stream(intruder, None, event_id, SECRET) == "status 404"
    own = intruder.initialize(V3)
    posted = intruder.post(
        call("ping-1", "echo", {"message": "hi"}),
        version=V3,
        session=own,
        headers={"last-event-id": event_id},
    )
    assert posted.status_code == 404 and SECRET not in posted.text, posted.text
    assert resumed_from(log, INTRUDER, event_id) == []


def test_a_victims_event_id_smuggled_beside_the_intruders_own_is_refused(world):
    callers, log = world
    _victim_session, victims = victim_event_id(callers["victim"])
    own, mine = victim_event_id(callers["intruder"], "intruder-own-9e2b")
    for ids in ([mine, victims], [victims, mine]):
        assert read_stream(callers["intruder"], own, ids, SECRET) == "status 404"
    assert resumed_from(log, INTRUDER, victims) == []


def test_an_event_id_resumes_only_the_session_it_was_relayed_in(world):
    callers, log = world
    _first, event_id = victim_event_id(callers["victim"])
    second = callers["victim"].initialize(V3)
    assert read_stream(callers["victim"], second, event_id, SECRET) == "status 404"
    assert [
        e for e in resumed_from(log, VICTIM, event_id) if e["headers"]["mcp-session-id"] == second
    ] == []
