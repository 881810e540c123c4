"""SSE event ids as capabilities (#10.5): a ``Last-Event-ID`` is admitted only when this sidecar
relayed that id to the same caller in the same session. The pure pieces: the table, the filter
hook that fills it, the planner that names the session, and the check the judge calls."""

from __future__ import annotations

import itertools

import h11
from hypothesis import given
from hypothesis import strategies as st

from identity import AppIdentity
from sidecar.http.headers import FieldView
from sidecar.mcp import PendingFilter, PendingLists, SseFilter
from sidecar.mcp.sessions import McpSessions
from sidecar.pipeline import InboundRequest
from sidecar.proxy import mcp_route
from tests._support.mcp_policies import POLICY

VICTIM = AppIdentity("public", "default", "analyst-agent")
TWIN_IN_DEV = AppIdentity("public", "dev", "analyst-agent")
OTHER = AppIdentity("public", "default", "reader")
SERVER = AppIdentity("public", "default", "mcp-server")


def resume(caller, session, *event_ids, verb="GET") -> InboundRequest:
    pairs = [(b"mcp-session-id", session.encode())] if session else []
    pairs += [(b"last-event-id", e.encode()) for e in event_ids]
    return InboundRequest(caller, SERVER, verb, "mcp", FieldView(pairs))


def owned(sessions: McpSessions, caller=VICTIM, session="s1") -> McpSessions:
    sessions.claim(caller, session)
    return sessions


# --- the table ----------------------------------------------------------------------------------


def test_an_event_id_belongs_to_its_caller_within_its_session():
    sessions = McpSessions()
    assert sessions.saw_event(VICTIM, "s1", "e1")
    assert sessions.saw_event(VICTIM, "s1", "e1")  # relayed again to its owner: fine
    assert not sessions.saw_event(TWIN_IN_DEV, "s1", "e1")  # same App ID, other namespace
    assert sessions.event_owner("s1", "e1") == VICTIM
    assert sessions.event_owner("s2", "e1") is None  # another session's "e1" is another event
    assert sessions.event_owner(None, "e1") is None


def test_event_ids_are_bounded_per_caller_and_in_total():
    sessions = McpSessions(event_limit=6, events_per_caller=3)
    sessions.saw_event(VICTIM, "s1", "mine")
    for n in range(20):
        sessions.saw_event(OTHER, "s9", f"flood-{n}")
    assert sessions.event_owner("s1", "mine") == VICTIM  # the flooder pushed out only its own
    assert sessions.event_count() == 4
    for n in range(20):
        sessions.saw_event(AppIdentity("public", "default", f"app-{n}"), "s", "e")
    assert sessions.event_count() <= 6


def test_event_ids_are_forgotten_with_their_session():
    sessions = owned(McpSessions(limit=2, per_caller=2))
    sessions.saw_event(VICTIM, "s1", "e1")
    sessions.end(VICTIM, "s1")
    assert sessions.event_owner("s1", "e1") is None and sessions.event_count() == 0
    owned(sessions, session="s2")
    sessions.saw_event(VICTIM, "s2", "e2")
    owned(sessions, session="s3")
    owned(sessions, session="s4")  # evicts s2, and its event ids with it
    assert sessions.event_owner("s2", "e2") is None and sessions.event_count() == 0


# --- the check the judge calls ------------------------------------------------------------------


def test_resuming_from_an_event_relayed_to_this_caller_in_this_session_passes():
    sessions = owned(McpSessions())
    sessions.saw_event(VICTIM, "s1", "e1")
    assert mcp_route.check_session_owner(sessions, resume(VICTIM, "s1", "e1")) is None
    assert mcp_route.check_session_owner(sessions, resume(VICTIM, "s1")) is None  # no resumption


def test_every_other_last_event_id_gets_the_404_of_an_unknown_session():
    sessions = owned(McpSessions())
    owned(sessions, OTHER, "s-other")
    owned(sessions, VICTIM, "s2")
    sessions.saw_event(VICTIM, "s1", "e1")
    sessions.saw_event(OTHER, "s-other", "e-other")
    sessions.saw_event(None, None, "stateless")
    unknown_session = mcp_route.check_session_owner(sessions, resume(OTHER, "never-issued"))
    refused = [
        resume(OTHER, "s-other", "e1"),  # the victim's event, in the intruder's own session
        resume(VICTIM, "s2", "e1"),  # the caller's own event, in another of its sessions
        resume(VICTIM, "s1", "never-relayed"),
        resume(OTHER, None, "e1"),  # no session at all
        resume(VICTIM, None, "stateless"),
        resume(OTHER, "s-other", "e-other", "e1"),  # its own id, the victim's beside it
        resume(OTHER, "s-other", "e1", verb="POST"),
        resume(OTHER, "s-other", "e1", verb="DELETE"),
    ]
    for request in refused:
        decision = mcp_route.check_session_owner(sessions, request)
        assert decision is not None and not decision.allowed and decision.status == 404, request
        assert decision.body == unknown_session.body  # nothing tells the cases apart
        assert decision.reason == unknown_session.reason


def test_a_repeated_last_event_id_is_refused_even_if_both_are_the_callers():
    sessions = owned(McpSessions())
    sessions.saw_event(VICTIM, "s1", "e1")
    sessions.saw_event(VICTIM, "s1", "e2")
    decision = mcp_route.check_session_owner(sessions, resume(VICTIM, "s1", "e1", "e2"))
    assert decision is not None and decision.status == 404 and "repeated" in decision.message


# --- the filter records what it passes ----------------------------------------------------------

STREAM = (
    b"id: prime\ndata: \n\n"  # the 2025-11-25 priming event
    b": keep-alive\n\n"
    b'id: e1\ndata: {"jsonrpc":"2.0","method":"notifications/progress"}\n\n'
    b"id: bare\n\n"  # an id with no data still moves the client's last event id
    b"id: bad\ndata: {not json\n\n"  # unreadable: dropped, so the client never sees its id
    b'id: e2\ndata: {"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"rm"}]}}\n\n'
    b"id: half\ndata: {}"  # unterminated: never dispatched
)


def recorded(chunks) -> list[str]:
    seen: list[str] = []
    sse = SseFilter(PendingLists(), backstop=lambda m: None, on_event_id=seen.append)
    for chunk in chunks:
        sse.feed(chunk)
    sse.close()
    return seen


def test_the_filter_reports_the_ids_it_passes_and_only_those():
    assert recorded([STREAM]) == ["prime", "e1", "bare", "e2"]


@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_the_reported_ids_do_not_depend_on_how_the_stream_is_split(cuts):
    edges = [0, *sorted(cuts), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    assert recorded(chunks) == ["prime", "e1", "bare", "e2"]


def test_a_stream_cut_for_an_unfilterable_event_reports_nothing_after_the_cut():
    seen: list[str] = []
    pending = PendingLists()
    pending.add_all([PendingFilter(7, "tools/list", VICTIM, POLICY, "2025-11-25")])
    sse = SseFilter(pending, own_ids=(7,), backstop=lambda m: None, on_event_id=seen.append)
    sse.feed(b"id: a\ndata: \n\nid: b\ndata: {not json\n\nid: c\ndata: {}\n\n")
    assert sse.failed and seen == ["a"]


# --- the planner names the stream's session -----------------------------------------------------


def planned(sessions, request, response_headers):
    plan = mcp_route.response_planner(sessions, (), (), lambda: POLICY, request)
    return plan(h11.Response(status_code=200, headers=response_headers))


def test_events_of_an_initialize_answer_belong_to_the_session_it_issues():
    sessions = McpSessions()
    request = InboundRequest(VICTIM, SERVER, "POST", "mcp", {})
    relay = planned(
        sessions,
        request,
        [(b"content-type", b"text/event-stream"), (b"mcp-session-id", b"new-session")],
    )
    relay.feed(b'id: init-1\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n')
    assert sessions.event_owner("new-session", "init-1") == VICTIM
    assert sessions.event_owner(None, "init-1") is None


def test_events_of_a_get_stream_belong_to_the_session_it_names():
    sessions = owned(McpSessions())
    request = resume(VICTIM, "s1")
    relay = planned(sessions, request, [(b"content-type", b"text/event-stream")])
    relay.feed(b'id: g1\ndata: {"jsonrpc":"2.0","method":"notifications/message"}\n\n')
    assert sessions.event_owner("s1", "g1") == VICTIM
    assert mcp_route.check_session_owner(sessions, resume(VICTIM, "s1", "g1")) is None
    assert mcp_route.check_session_owner(sessions, resume(OTHER, "s1", "g1")) is not None
