"""The MCP endpoint of an app registered as an MCP server: glue between the inbound proxy and
the pure MCP layer (:mod:`sidecar.mcp`).

Requests: a POST body is read (up to the limit) and judged by ``inspect_request``; GET (the
2025-era server→client stream) and DELETE (session end) carry no body and pass only for a caller
holding some grant. A ``Content-Encoding`` we would have to decode to judge is refused, and
``Accept-Encoding`` is not forwarded, so the server answers in plain text we can filter.

Responses: list requests leave entries in the session's :class:`PendingLists`; the matching
response is filtered whether it comes back as ``application/json`` (buffered, rewritten, a new
Content-Length) or as ``text/event-stream`` on this POST or on a later GET stream (event by
event). On top of that, *every* response body is checked by content, whatever request it
claims to answer: any list-shaped result (tools, resources, resource templates, prompts) is cut
down to the caller's grants under the policy in force as it passes (a ``ping`` answered with the
tool list of a racing ``tools/list`` — ids ``"77"`` and ``77`` — is filtered like the list).
A response that must be filtered but cannot be — compressed, of another type, malformed — is
withheld (502 with a JSON-RPC error), never passed on. Error bodies that hold no list pass
unchanged: the client must see the server's own 400 (the 2026-07-28 ``server/discover``
fallback depends on it).

Ownership (:mod:`sidecar.mcp.sessions`): a session belongs to the caller (trust domain,
namespace and App ID) whose request the response issuing its ``Mcp-Session-Id`` answered, and a
task to the caller whose request created it. :func:`check_session_owner` refuses anyone else's
use of a session with the 404 an unknown session gets, before the server sees it, and the same
for a ``Last-Event-ID`` that names no event relayed to this caller in this session; ``tasks/*``
naming another caller's task are refused in :func:`judge_body`, and ``tasks/list`` results are
cut to the caller's own tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from operator import itemgetter
from typing import Any

import h11

from ..errors import SidecarError
from ..mcp import (
    PendingLists,
    RequestVerdict,
    ResponseFilterFailed,
    SseFilter,
    caller_has_any_grant,
    failure_body,
    filter_response_body,
    inspect_request,
    jsonrpc,
    list_backstop,
)
from ..mcp.filtering import DROP, may_hold_list, refuse_look_alikes
from ..mcp.policy import caller_label, is_granted
from ..mcp.sessions import MAX_SESSIONS, McpSessions
from ..pipeline import InboundRequest, McpRoute
from ..policy import Decision

__all__ = [
    "MAX_SESSIONS",
    "NEVER_FORWARDED",
    "McpSessions",
    "WithheldResponse",
    "check_session_owner",
    "check_without_body",
    "judge_body",
    "refuse_encoding",
    "response_planner",
    "session_id",
]

NEVER_FORWARDED = frozenset({b"accept-encoding"})


class WithheldResponse(SidecarError):
    """A response that had to be filtered could not be; the caller gets a JSON-RPC error."""

    code = ResponseFilterFailed.code
    http_status = 502

    def __init__(self, message: str, request_id=None) -> None:
        super().__init__(message)
        self.response_body = failure_body(request_id, message)


# Every request field the MCP layer reads (sidecar.mcp and this module); the guard test
# tests/unit/test_mcp_fields_read.py fails if code reads a field that is not listed here.
MCP_FIELDS = frozenset(
    {
        b"mcp-session-id",
        b"last-event-id",
        b"content-encoding",
        b"content-length",
        b"transfer-encoding",
        b"mcp-protocol-version",
        b"mcp-method",
        b"mcp-name",
    }
)
_last_read: list = [None, None]  # (the headers object, its MCP fields): one entry


def mcp_fields(request: InboundRequest) -> Mapping[str, str]:
    """The request's MCP fields as a plain dict, read from the raw pairs in one pass (repeated
    fields joined with ``", "`` as the header view joins them).

    The judge asks for them several times per request (head, then again when the body is
    complete); the last request's are kept, checked by identity, so the pairs are walked about
    once per step. Headers that are already a plain mapping (no ``pairs``) are read as they are.
    """
    headers = request.headers
    if _last_read[0] is headers:
        return _last_read[1]
    pairs = getattr(headers, "pairs", None)
    if pairs is None:
        return headers
    found: dict[str, str] = {}
    for name, value in pairs:
        if name in MCP_FIELDS:
            key, text = name.decode("latin-1"), value.decode("latin-1")
            found[key] = f"{found[key]}, {text}" if key in found else text
    _last_read[0], _last_read[1] = headers, found
    return found


def session_id(request: InboundRequest) -> str | None:
    return mcp_fields(request).get("mcp-session-id")


SESSION_NOT_FOUND = "Session not found"


def check_session_owner(sessions: McpSessions, request: InboundRequest) -> Decision | None:
    """None when ``request`` may use the session it names (or names none); else the 404 an
    unknown session gets — the same body whether the session belongs to another caller or to
    nobody, so the answer tells a caller nothing about other callers' sessions.

    Applies to every verb (POST, the GET stream and its ``Last-Event-ID`` resumption, DELETE).
    A session this sidecar never saw issued (or has forgotten) is refused too: the client starts
    a new one, as the spec prescribes after a 404. So is a ``Last-Event-ID`` this sidecar did not
    relay to this caller in this session (the server's event store may be shared by all).
    """
    sid = session_id(request)
    if sid is not None:
        owner = sessions.owner(sid)
        if owner != request.caller:
            why = "is unknown to this sidecar" if owner is None else "belongs to another caller"
            return _not_found(
                f"Mcp-Session-Id {sid[:64]!r} {why}",
                "sessions belong to the caller whose request opened them",
            )
    return _check_last_event_id(sessions, request, sid)


def _check_last_event_id(
    sessions: McpSessions, request: InboundRequest, sid: str | None
) -> Decision | None:
    """A ``Last-Event-ID`` (on any verb) must name an event this sidecar relayed to this caller
    in this session: a server may resume from any id in its store, whoever it was issued to."""
    if _last_event_id_fields(request) > 1:
        return _not_found(
            "Last-Event-ID is repeated: a stream resumes from one event",
            "a stream resumes only from an event relayed to the same caller in the same session",
        )
    event_id = mcp_fields(request).get("last-event-id")
    if event_id is None:
        return None
    owner = sessions.event_owner(sid, event_id)
    if owner == request.caller:
        return None
    where = f"session {sid[:64]!r}" if sid is not None else "a stateless stream"
    why = "never relayed to" if owner is None else "relayed to another caller than"
    return _not_found(
        f"Last-Event-ID {event_id[:64]!r} was {why} this caller in {where}",
        "a stream resumes only from an event relayed to the same caller in the same session",
    )


_NAME = itemgetter(0)
_counted: list = [None, 0]  # (the headers object, its Last-Event-ID count): one entry


def _last_event_id_fields(request: InboundRequest) -> int:
    """How many Last-Event-ID fields the request has (0 for a plain mapping), counted once per
    request like ``mcp_fields`` (the judge asks at the head and again with the body)."""
    headers = request.headers
    if _counted[0] is headers:
        return _counted[1]
    pairs = getattr(headers, "pairs", None)
    count = 0 if pairs is None else _count_last_event_ids(pairs)
    _counted[0], _counted[1] = headers, count
    return count


def _count_last_event_ids(pairs) -> int:
    """How many ``Last-Event-ID`` fields, whatever their letter case: the names lower-cased
    at once and split apart again, all in C. A field name cannot hold a line feed (it is a
    token); one that did would only split into more pieces, so the count can only come out
    higher, never lower."""
    return b"\n".join(map(_NAME, pairs)).lower().split(b"\n").count(b"last-event-id")


def _not_found(message: str, rule: str) -> Decision:
    """The one answer for anything naming state that is not the caller's: an unknown session."""
    return Decision.deny(
        "mcp",
        "session_not_found",
        message,
        404,
        rule=rule,
        body=jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, SESSION_NOT_FOUND),
    )


def check_without_body(route: McpRoute, request: InboundRequest) -> Decision:
    """GET (the server→client stream) and DELETE (session end): any grant opens the session.

    Nothing else is accepted on the endpoint, and these two may not carry a body: a body the
    policy never read must not reach a server that might read it (Streamable HTTP defines only
    POST bodies).
    """
    if request.verb not in ("GET", "DELETE"):
        message = f"{request.verb} is not an MCP Streamable HTTP method (use POST, GET or DELETE)"
        body = jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, message)
        return Decision.deny("mcp", "method_not_allowed", message, 405, body=body)
    if _has_body(request):
        message = f"{request.verb} requests to the MCP endpoint may not carry a body"
        body = jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, message)
        return Decision.deny("mcp", "unexpected_body", message, 400, body=body)
    caller = caller_label(route.policy, request.caller)
    if caller_has_any_grant(route.policy, request.caller):
        return Decision.allow("mcp", "session_allowed", rule=f"policy {route.policy.name}")
    message = (
        f"session refused: caller {caller!r} holds no grant on MCP server "
        f"{route.policy.server_ref!r}"
    )
    return Decision.deny(
        "mcp",
        "session_refused",
        message,
        403,
        rule=f"policy {route.policy.name}: no rule grants this caller anything",
        body=jsonrpc.error_body(None, jsonrpc.ACCESS_DENIED, message),
    )


def _has_body(request: InboundRequest) -> bool:
    fields = mcp_fields(request)
    length = fields.get("content-length", "0").strip()
    return "transfer-encoding" in fields or length not in ("", "0")


def refuse_encoding(request: InboundRequest) -> Decision | None:
    encoding = mcp_fields(request).get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    message = f"Content-Encoding {encoding!r} is not accepted on the MCP endpoint: send plain JSON"
    return Decision.deny(
        "mcp",
        "content_encoding_refused",
        message,
        400,
        body=jsonrpc.error_body(None, jsonrpc.INVALID_REQUEST, message),
    )


TASK_METHODS_WITH_ID = frozenset({"tasks/get", "tasks/cancel", "tasks/result", "tasks/update"})


def judge_body(
    route: McpRoute,
    request: InboundRequest,
    body: bytes,
    limit: int,
    sessions: McpSessions | None = None,
    *,
    check_owner: bool = True,
) -> RequestVerdict:
    """The MCP policy over one POST body, for the caller's full identity (namespace + App ID).

    With ``sessions``, ``tasks/*`` naming a task are allowed only for the caller that created
    it (in this session); anyone else, or a task this sidecar never saw created, gets the
    JSON-RPC error an unknown task gets, and the server never sees the request. A task created
    by a call of a tool the caller is no longer granted is refused too: its result is that
    tool's. ``check_owner=False`` (a request judged again while under way) skips the owner
    lookup, settled on arrival, and keeps the grant check.
    """
    fields = mcp_fields(request)
    verdict = inspect_request(
        body,
        caller=request.caller,
        policy=route.policy,
        headers=fields,
        negotiated_version=fields.get("mcp-protocol-version"),
        max_body_bytes=limit,
    )
    if sessions is None or not verdict.allowed or not verdict.task_ids:
        return verdict
    sid = session_id(request)
    for task_id in verdict.task_ids:
        who = caller_label(route.policy, request.caller)
        if check_owner and sessions.task_owner(sid, task_id) != request.caller:
            message = f"task {task_id[:64]!r} not found"
            return _task_refused(
                verdict, "task_not_found", message, f"{message} for caller {who!r}", 404,
                "tasks belong to the caller whose request created them", jsonrpc.INVALID_PARAMS,
            )  # fmt: skip
        tool = sessions.task_tool(sid, task_id)
        if tool is not None and not is_granted(route.policy, request.caller, "tools", tool):
            message = f"task {task_id[:64]!r} runs tool {tool!r}, which is no longer granted"
            return _task_refused(
                verdict, "task_tool_not_granted", message, f"{message} to caller {who!r}", 403,
                "a task's result is behind the grant of the tool that created it",
                jsonrpc.ACCESS_DENIED,
            )  # fmt: skip
    return verdict


def _task_refused(
    verdict: RequestVerdict,
    reason: str,
    message: str,
    detail: str,
    status: int,
    rule: str,
    code: int,
) -> RequestVerdict:
    """``verdict`` refused for a task it names: ``message`` to the client, ``detail`` to the
    audit record."""
    request_id = verdict.request_ids[0] if len(verdict.request_ids) == 1 else None
    body = jsonrpc.error_body(request_id, code, message)
    decision = Decision.deny("mcp", reason, detail, status, rule=rule, body=body)
    return replace(verdict, decision=decision)


_UNSET: Any = object()


def content_filter(
    sessions: McpSessions | None,
    request: InboundRequest,
    current_policy: Callable[[], Any],
    sid: str | None = _UNSET,
    tool: str | None = None,
) -> Callable[[Any], Any | None]:
    """The per-message content check every response message passes (JSON body, batch element,
    SSE event): lists cut to the caller's grants under the policy in force *now*; task ids
    created for this caller recorded; ``tasks/list`` cut to the caller's own tasks, and a
    ``notifications/tasks/status`` about another's task dropped (``DROP``). Returns the
    rewritten message, or None when it is fine as it is; raises ``ResponseFilterFailed`` for a
    task id the server hands this caller that another caller holds. ``tool``: the tool this
    request called, which a task it creates stays bound to."""
    caller = request.caller
    version = mcp_fields(request).get("mcp-protocol-version")
    if sid is _UNSET:
        sid = session_id(request)

    def check(message: Any) -> Any | None:
        filtered = list_backstop(caller, current_policy(), version)(message)
        if sessions is None or filtered is DROP:
            return filtered
        current = filtered if filtered is not None else message
        if isinstance(current, dict) and current.get("method") == TASK_STATUS:
            return _task_status_check(current, sessions, caller, sid)
        result = current.get("result") if isinstance(current, dict) else None
        if not isinstance(result, dict) or "method" in current:
            return filtered
        task = result.get("task")
        if isinstance(task, dict):  # "TaskId" beside "taskId": what a case-insensitive client reads
            refuse_look_alikes(task, _TASK_ID, "result.task.")
        created = task.get("taskId") if isinstance(task, dict) else None
        if isinstance(created, str) and not sessions.claim_task(caller, sid, created, tool):
            raise ResponseFilterFailed("the server issued a task id another caller holds")
        tasks = result.get("tasks")
        if isinstance(tasks, list):
            kept = [
                t
                for t in tasks
                if isinstance(t, dict)
                and isinstance(t.get("taskId"), str)
                and sessions.task_owner(sid, t["taskId"]) == caller
            ]
            for t in kept:
                refuse_look_alikes(t, _TASK_ID, "result.tasks[].")
            if len(kept) != len(tasks):
                filtered = {**current, "result": {**result, "tasks": kept}}
        return filtered

    return check


_TASK_ID = {"taskid": "taskId"}
TASK_STATUS = "notifications/tasks/status"


def _task_status_check(message: dict, sessions: McpSessions, caller, sid) -> Any | None:
    """A server's task status reaches a caller only for a task created for it (in this session):
    a server that lists every task to whoever asks announces every status on every stream too,
    like resource updates (filtering.py). DROP otherwise, or for a status naming no task."""
    params = message.get("params")
    if not isinstance(params, dict):
        return DROP
    refuse_look_alikes(params, _TASK_ID, "params.")
    task_id = params.get("taskId")
    if isinstance(task_id, str) and sessions.task_owner(sid, task_id) == caller:
        return None
    return DROP


def _note_tools(sessions: McpSessions, message: Any) -> None:  # observe hook of the filters
    """Remember the tool names the server lists (before filtering): the CLI warns about grants
    naming a tool the server never listed."""
    result = message.get("result") if isinstance(message, dict) else None
    tools = result.get("tools") if isinstance(result, dict) else None
    if isinstance(tools, list):
        sessions.saw_tools(t.get("name") for t in tools if isinstance(t, dict))


class _JsonFilter:
    """A whole (non-event-stream) body: filtered by pending id and by content.

    Bodies that cannot hold a list (:func:`may_hold_list`, a byte scan) pass without parsing; a
    body that might but does not parse is withheld unless it is a non-JSON error page (the
    server's own 404 or 500 text, which no client reads as a JSON-RPC answer).
    """

    buffered = True

    def __init__(
        self,
        pending: PendingLists,
        ids: tuple,
        backstop,
        *,
        status: int,
        is_json: bool,
        observe=None,
    ) -> None:
        self.pending, self.ids, self.backstop, self.observe = pending, ids, backstop, observe
        self.status, self.is_json = status, is_json
        self.extra_headers = ((b"cache-control", b"private, no-store"),) if ids else ()

    def feed(self, body: bytes) -> bytes:
        try:
            if not self.ids and not may_hold_list(body):
                return body
            return filter_response_body(
                body, self.pending, backstop=self.backstop, observe=self.observe
            )
        except ResponseFilterFailed as exc:
            if not self.is_json and self.status >= 400:
                return body  # an error page (HTML, text), not JSON-RPC: no client reads a list
            raise WithheldResponse(str(exc), self.ids[0] if len(self.ids) == 1 else None) from exc
        finally:
            for request_id in self.ids:
                self.pending.discard(request_id)

    def finish(self) -> bytes:
        return b""


class _SseListFilter:
    buffered = False
    extra_headers = ((b"cache-control", b"private, no-store"),)

    def __init__(
        self, pending: PendingLists, own_ids: tuple, backstop, observe=None, on_event_id=None
    ) -> None:
        self._filter = SseFilter(
            pending, own_ids=own_ids, backstop=backstop, observe=observe, on_event_id=on_event_id
        )

    def feed(self, chunk: bytes) -> bytes:
        return self._filter.feed(chunk)

    def finish(self) -> bytes:
        return self._filter.close()


class _Withhold:
    buffered = True
    extra_headers = ()

    def __init__(self, reason: str, ids: tuple, pending: PendingLists) -> None:
        self.reason, self.ids = reason, ids
        for request_id in ids:  # nothing will answer them now
            pending.discard(request_id)

    def feed(self, body: bytes) -> bytes:
        raise WithheldResponse(self.reason, self.ids[0] if len(self.ids) == 1 else None)

    def finish(self) -> bytes:
        return b""


_PLANNING_FIELDS = frozenset({b"mcp-session-id", b"content-type", b"content-encoding"})


def _planning_fields(headers) -> dict[bytes, bytes]:
    """The response fields the plan reads, in one pass; repeated ones joined as ``get_header``
    joins them (RFC 9110 §5.3)."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _PLANNING_FIELDS:
            found[name] = found[name] + b", " + value if name in found else value
    return found


def response_planner(
    sessions: McpSessions,
    new: tuple,
    own_ids: tuple,
    current_policy,
    request: InboundRequest,
    tool: str | None = None,
):
    """What to do with the app's answer, decided from its status and headers.

    Every response body from an MCP server is checked: by request id for the lists this caller
    asked for, and by content (:func:`content_filter`) for any list result in any message, so a
    replayed, resumed, mis-numbered or cross-delivered list cannot slip past an id lookup. The
    content check judges each message by the policy in force when it passes
    (``current_policy()``), so a grant revoked while a stream is open takes effect on the next
    event. A response issuing an ``Mcp-Session-Id`` makes this caller its owner, and every SSE
    event id passed on is recorded as this caller's, in the stream's session. The list
    requests of this POST (``new``) are registered only once the app answers: a request that
    never got an answer leaves nothing behind.
    """
    caller = request.caller
    request_session = session_id(request)
    pending = sessions.get(caller, request_session)
    list_ids = tuple(p.request_id for p in new) if new else ()
    backstop = content_filter(sessions, request, current_policy, request_session, tool)
    observe = partial(_note_tools, sessions)

    def plan(response: h11.Response):
        pending_now = pending
        stream_session = request_session
        fields = _planning_fields(response.headers)
        issued = fields.get(b"mcp-session-id")
        sid = issued.decode("latin-1") if issued is not None else None
        if sid is not None and response.status_code < 400 and sid != stream_session:
            if not sessions.claim(caller, sid):
                return _Withhold("the server issued a session id another caller holds", (), pending)
            pending_now, stream_session = sessions.get(caller, sid), sid
        content_type = (fields.get(b"content-type") or b"").lower()
        is_sse = content_type.startswith(b"text/event-stream")
        is_json = content_type.startswith(b"application/json")
        pending_now.add_all(new)
        encoding = (fields.get(b"content-encoding") or b"identity").lower()
        if encoding not in (b"identity", b""):
            return _Withhold(
                f"a response arrived with Content-Encoding {encoding!r}", list_ids, pending_now
            )
        if is_sse:
            saw_event = partial(sessions.saw_event, caller, stream_session)
            return _SseListFilter(pending_now, own_ids, backstop, observe, saw_event)
        if list_ids and not is_json and response.status_code < 300:
            return _Withhold(
                f"a list response arrived as {content_type.decode('latin-1')!r}, which cannot "
                "be filtered",
                list_ids,
                pending_now,
            )
        return _JsonFilter(
            pending_now,
            list_ids,
            backstop,
            status=response.status_code,
            is_json=is_json,
            observe=observe,
        )

    return plan
