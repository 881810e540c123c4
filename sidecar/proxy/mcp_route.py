"""The MCP endpoint of an app registered as an MCP server: glue between the inbound proxy and
the pure MCP layer (:mod:`sidecar.mcp`).

Requests: a POST body is read (up to the limit) and judged by ``inspect_request``; GET (the
2025-era server→client stream) and DELETE (session end) carry no body and pass only for a caller
holding some grant. A ``Content-Encoding`` we would have to decode to judge is refused, and
``Accept-Encoding`` is not forwarded, so the server answers in plain text we can filter.

Responses: list requests leave entries in the session's :class:`PendingLists`; the matching
response is filtered whether it comes back as ``application/json`` (buffered, rewritten, a new
Content-Length) or as ``text/event-stream`` on this POST or on a later GET stream (event by
event). A response that must be filtered but cannot be — compressed, of another type, malformed —
is withheld (502 with a JSON-RPC error), never passed on. Error statuses pass unchanged: the
client must see the server's own 400 (the 2026-07-28 ``server/discover`` fallback depends on it).
"""

from __future__ import annotations

from collections import OrderedDict

import h11

from ..errors import SidecarError
from ..http.headers import get_header
from ..mcp import (
    PendingLists,
    ResponseFilterFailed,
    SseFilter,
    caller_has_any_grant,
    failure_body,
    filter_response_body,
    inspect_request,
    jsonrpc,
    list_backstop,
)
from ..pipeline import InboundRequest, McpRoute
from ..policy import Decision

MAX_SESSIONS = 4096
NEVER_FORWARDED = frozenset({b"accept-encoding"})


class WithheldResponse(SidecarError):
    """A response that had to be filtered could not be; the caller gets a JSON-RPC error."""

    code = ResponseFilterFailed.code
    http_status = 502

    def __init__(self, message: str, request_id=None) -> None:
        super().__init__(message)
        self.response_body = failure_body(request_id, message)


class McpSessions:
    """Pending list filters per (caller, Mcp-Session-Id), bounded, oldest dropped first.

    A session's entries must outlive one request (a list response may be resumed on a GET
    stream) and policy reloads (each entry keeps the policy it was judged under).
    """

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._limit = limit
        self._sessions: OrderedDict[tuple[str, str], PendingLists] = OrderedDict()

    def get(self, caller: str, session_id: str | None) -> PendingLists:
        if session_id is None:
            return PendingLists()  # stateless (2026-07-28): the request is the session
        key = (caller, session_id)
        pending = self._sessions.get(key)
        if pending is None:
            pending = self._sessions[key] = PendingLists()
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key)
        return pending

    def end(self, caller: str, session_id: str | None) -> None:
        if session_id is not None:
            self._sessions.pop((caller, session_id), None)


def session_id(request: InboundRequest) -> str | None:
    return request.headers.get("mcp-session-id")


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
    caller = request.caller.app_id
    if caller_has_any_grant(route.policy, caller):
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
    length = request.headers.get("content-length", "0").strip()
    return "transfer-encoding" in request.headers or length not in ("", "0")


def refuse_encoding(request: InboundRequest) -> Decision | None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
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


def judge_body(route: McpRoute, request: InboundRequest, body: bytes, limit: int):
    return inspect_request(
        body,
        caller_app_id=request.caller.app_id,
        policy=route.policy,
        headers=request.headers,
        negotiated_version=request.headers.get("mcp-protocol-version"),
        max_body_bytes=limit,
    )


class _JsonListFilter:
    buffered = True
    extra_headers = ((b"cache-control", b"private, no-store"),)

    def __init__(self, pending: PendingLists, ids: tuple, backstop) -> None:
        self.pending, self.ids, self.backstop = pending, ids, backstop

    def feed(self, body: bytes) -> bytes:
        try:
            filtered = filter_response_body(body, self.pending, backstop=self.backstop)
        except ResponseFilterFailed as exc:
            raise WithheldResponse(str(exc), self.ids[0] if len(self.ids) == 1 else None) from exc
        finally:
            for request_id in self.ids:
                self.pending.discard(request_id)
        return filtered

    def finish(self) -> bytes:
        return b""


class _SseListFilter:
    buffered = False
    extra_headers = ((b"cache-control", b"private, no-store"),)

    def __init__(self, pending: PendingLists, own_ids: tuple, backstop) -> None:
        self._filter = SseFilter(pending, own_ids=own_ids, backstop=backstop)

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


def response_planner(
    pending: PendingLists,
    new: tuple,
    own_ids: tuple,
    current_policy,
    request: InboundRequest,
):
    """What to do with the app's answer, decided from its status and headers.

    Every event stream from an MCP server is filtered: by request id for the lists this caller
    asked for, and by content (:func:`list_backstop`) for any list result on it, so a replayed,
    resumed or mis-numbered list cannot slip past an id lookup. The content filter judges each
    event by the policy in force when it passes (``current_policy()``), so a grant revoked while
    a stream is open takes effect on the next event. The list requests of this POST (``new``)
    are registered only once the app answers: a request that never got an answer leaves nothing
    behind.
    """
    caller = request.caller.app_id
    version = request.headers.get("mcp-protocol-version")
    list_ids = tuple(p.request_id for p in new)

    def backstop(message):
        return list_backstop(caller, current_policy(), version)(message)

    def plan(response: h11.Response):
        content_type = (get_header(response.headers, b"content-type") or b"").lower()
        is_sse = content_type.startswith(b"text/event-stream")
        is_json = content_type.startswith(b"application/json")
        if response.status_code >= 300 and not is_sse and not (list_ids and is_json):
            return None  # an error page: the server's own answer, unchanged (discover's 400)
        pending.add_all(new)
        if not list_ids and not is_sse:
            return None  # no list of ours, and no stream that could carry one
        encoding = (get_header(response.headers, b"content-encoding") or b"identity").lower()
        if encoding not in (b"identity", b""):
            return _Withhold(
                f"a list response arrived with Content-Encoding {encoding!r}", list_ids, pending
            )
        if is_sse:
            return _SseListFilter(pending, own_ids, backstop)
        if is_json:
            return _JsonListFilter(pending, list_ids, backstop)
        return _Withhold(
            f"a list response arrived as {content_type.decode('latin-1')!r}, which cannot be "
            "filtered",
            list_ids,
            pending,
        )

    return plan
