"""The inbound judge: the whole decision on a request into the app, as pure code.

Order: peer identity (the mTLS certificate) → verb → path (normalised once, CVE-2026-41491) →
ACL → bearer token → MCP inspection → OAuth scopes; the first deny answers, and the default is
deny. The judge never touches a socket: :meth:`InboundJudge.head` takes the request head and
returns a verdict (:mod:`.verdict`); when the body must be read, :meth:`InboundJudge.body` takes
it and decides again.

**The decision holds when the request is forwarded.** A body the sidecar reads before forwarding
(an inspected MCP POST; any small body, which the relay forwards whole) may take as long as the
caller likes to arrive (up to the listener's ``body_timeout``). The request is therefore judged
again, at body completion, under the policy in force *then* and by the caller's leaf as it
stands then (and at that time, so a bearer token or an SVID that expired meanwhile fails): a
grant revoked, an ACL changed, or a binding that moved the caller's App ID while the body
trickled in stops the request. A body that is
streamed (large or chunked, uninspected) is forwarded as it arrives, so the head's decision is
the one in force when it left.

**No uninspected door into an MCP server.** For an app registered as an MCP server, a request
outside its registered endpoint(s) is refused unless an ACL operation names that path for the
caller (a default action does not count): the whole app is MCP territory, and what the sidecar
cannot inspect must be opened on purpose. The SDK's legacy HTTP+SSE transport (``/sse`` and
``/messages/``) gets an error saying why it is refused.

The judge calls the MCP layer only through :mod:`sidecar.proxy.mcp_route` and decides the
forwarded headers only through :mod:`.forward_headers`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_to_bytes

from identity import AppIdentity, IdentityError, IdentityMap, PeerSvid, current_identity_map

from ..http.headers import FieldView, get_header, unexpected_body
from ..http.message import request_head
from ..http.path import InvalidPath, RequestTarget, normalize_target
from ..http.relay import SMALL_BODY
from ..mcp import MCPServerAccessPolicy
from ..pipeline import InboundPolicy, InboundRequest, McpRoute
from ..policy import Decision
from ..policy.acl import match_form
from ..proxy import mcp_route
from . import forward_headers
from .verdict import Answer, Facts, Forward, ForwardPlan, ReadBody, Verdict

STANDARD_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH"}
)

_NO_GRANTS = MCPServerAccessPolicy.deny_all("no-longer-an-mcp-server")


@dataclass(frozen=True)
class InboundSite:
    """What the judge knows about its own side: who it is and where the app listens."""

    me: AppIdentity
    app_port: int | None
    app_host: str = "127.0.0.1"
    max_inspected_body: int = 4 * 1024 * 1024
    app_api_token: bytes | None = None  # sent to the app as dapr-api-token (APP_API_TOKEN)


@dataclass(frozen=True, slots=True)
class _Judged:
    """A request the head checks allowed: the continuation a :class:`ReadBody` carries."""

    request: Any  # the request head as received
    peer_host: str
    inbound: InboundRequest
    target: RequestTarget
    policy: InboundPolicy
    route: McpRoute | None
    decision: Decision
    verified: Any  # sidecar.bearer.VerifiedToken | None
    facts: Facts
    peer_svid: PeerSvid | None = None  # the caller's leaf, judged again when the body is in
    # Judged again while under way (InboundJudge.rejudge): the sessions, tasks and event ids it
    # named were checked on arrival and are not policy, so they are not looked up again.
    under_way: bool = False


def _bearer_gate():
    """Imported on first use: only apps with a bearer component pay for pyjwt in memory."""
    from ..proxy import bearer_gate

    return bearer_gate


def trace_id(headers) -> str | None:
    """The W3C trace id of a ``traceparent`` header (version 00 layout), if well formed."""
    value = get_header(headers, b"traceparent")
    if value is None:
        return None
    parts = value.strip().split(b"-")
    if len(parts) < 4 or len(parts[1]) != 32:
        return None
    try:
        text = parts[1].decode("ascii")
        if int(text, 16) == 0:
            return None
    except (UnicodeDecodeError, ValueError):
        return None
    return text.lower()


class InboundJudge:
    """Decides every request into the app; holds no I/O, only the MCP sessions' filter state."""

    def __init__(
        self,
        site: InboundSite,
        policy: Callable[[], InboundPolicy],
        sessions: mcp_route.McpSessions,
        bearer_sources: Callable[[], Any],
        identity_map: Callable[[], IdentityMap] = current_identity_map,
    ) -> None:
        self.site = site
        self._identity_map = identity_map
        self.policy = policy
        self.sessions = sessions
        self._bearer_sources = bearer_sources
        self._app_address = f"{site.app_host}:{site.app_port}"

    # --- the two steps -------------------------------------------------------------------

    def head(
        self,
        request,
        peer_identity,
        peer_identity_error,
        peer_host: str,
        now: float,
        peer_svid: PeerSvid | None = None,
        *,
        under_way: bool = False,
    ):
        """Judge a request head: :class:`Answer`, :class:`ReadBody` or :class:`Forward`.

        ``peer_svid`` (what the connection kept of the caller's leaf) makes the caller the one
        the identity map in force *now* derives, and refuses once the leaf has expired.
        ``under_way``: the request is one already forwarded, judged again (:meth:`rejudge`)."""
        policy = self.policy()
        fields = FieldView(request.headers)  # the header list is walked once from here on
        verb = request.method.decode("ascii", "replace")
        trace = trace_id(fields.pairs)
        refusal = None
        if peer_svid is not None:
            peer_identity, refusal = self._caller_now(peer_svid, now)
        elif peer_identity is None:
            why = peer_identity_error or "no identity"
            refusal = Decision.deny("identity", "ERR_PEER_IDENTITY", why, 403)
        if refusal is not None:
            facts = Facts(verb=verb, policy_version=policy.version, trace_id=trace)
            return _closing(Answer.deny(refusal, facts))
        try:
            if request.method not in STANDARD_METHODS:
                # The ACL judges unknown methods as POST (Dapr's calling sidecar sends them so);
                # the app must never see a method other than the one that was judged.
                message = f"HTTP method {verb!r} is not supported"
                refusal = Decision.deny("request", "ERR_METHOD_NOT_ALLOWED", message, 405)
                target = None
            elif (why := unexpected_body(request.method, fields.pairs)) is not None:
                refusal = Decision.deny("request", "ERR_BODY_NOT_ALLOWED", why, 400)
                target = None
            else:
                target = normalize_target(request.target)
        except InvalidPath as exc:
            refusal = Decision.deny("request", exc.code, str(exc), exc.http_status)
            target = None
        if target is None:
            facts = Facts(verb, caller=peer_identity, policy_version=policy.version, trace_id=trace)
            return Answer.deny(refusal, facts)
        facts = Facts(
            verb,
            target.method,
            peer_identity,
            policy_version=policy.version,
            trace_id=trace,
        )
        inbound = InboundRequest(
            caller=peer_identity,
            callee=self.site.me,
            verb=verb.upper(),
            method=target.method,
            headers=fields,
        )
        judged = self._judge_head(
            policy, request, peer_host, inbound, target, facts, now, peer_svid
        )
        if isinstance(judged, Answer):
            return judged
        if under_way:
            judged = replace(judged, under_way=True)
        return self._decide(judged, None)

    def body(self, step: ReadBody, body: bytes, now: float) -> Verdict:
        """Judge a request whose body is complete, under the policy and the caller's leaf as
        they stand now: the leaf may have expired, or a binding moved its App ID, while the
        body arrived (up to ``body_timeout``)."""
        judged: _Judged = step.state
        if judged.peer_svid is not None:
            caller, refusal = self._caller_now(judged.peer_svid, now)
            if refusal is None and caller != judged.inbound.caller:
                message = (
                    f"the caller's SVID {judged.peer_svid.spiffe_id} no longer maps to "
                    f"{judged.inbound.caller} (the identity map changed while the body arrived)"
                )
                refusal = Decision.deny("identity", "ERR_PEER_IDENTITY", message, 403)
            if refusal is not None:
                return _closing(Answer.deny(refusal, judged.facts))
        policy = self.policy()
        if policy is not judged.policy or _token_expired(judged, now):
            again = self._judge_head(
                policy,
                judged.request,
                judged.peer_host,
                judged.inbound,
                judged.target,
                judged.facts.but(policy_version=policy.version, bearer_subject=None),
                now,
                judged.peer_svid,
            )
            if isinstance(again, Answer):
                return again
            judged = replace(again, under_way=judged.under_way)
        return self._decide(judged, body)

    def rejudge(
        self,
        request,
        peer_identity,
        peer_identity_error,
        peer_host: str,
        peer_svid: PeerSvid | None,
        body: bytes | None,
        now: float,
    ) -> Decision | None:
        """None if the policy in force now would forward this request again; else the refusal.

        For an exchange still under way when a new policy is applied: an SSE stream or an upload
        may last hours, and a grant revoked meanwhile must end it, as it refuses the same
        request arriving now. The request goes through :meth:`head` and :meth:`body` again, so
        the answer is exactly the one a new request would get: the ACL, the bearer layer and,
        on the MCP endpoint, the tool grants (``body``: the body that was judged, or None when
        it streamed through unread). A body the new policy would want to inspect but that was
        never read is refused, since it cannot be judged. Whose the session, task and
        ``Last-Event-ID`` the request named are is not looked up again: they were the caller's
        when it arrived, which no policy changes, and those tables forget old entries (a resumed
        stream relays new event ids that push out the one it resumed from), so looking again
        would cut a stream the policy still allows. The tool a named task runs is judged again
        (a ``tasks/result`` of a tool whose grant was revoked is cut)."""
        verdict = self.head(
            request, peer_identity, peer_identity_error, peer_host, now, peer_svid, under_way=True
        )
        if isinstance(verdict, ReadBody):
            if body is None:
                if verdict.state.route is None:
                    return None  # asked for only to move a small body whole, not to judge it
                message = "the policy in force now inspects this request's body, which was not read"
                return Decision.deny("request", "ERR_BODY_NOT_JUDGED", message, 403)
            verdict = self.body(verdict, body, now)
        if isinstance(verdict, Forward):
            return None
        if not verdict.decision.allowed:
            return verdict.decision
        message = "the policy in force now answers this request itself"
        return Decision.deny(verdict.decision.layer, "ERR_NOT_FORWARDED", message, 403)

    def _caller_now(self, peer_svid: PeerSvid, now: float):
        """(caller, None) or (None, refusal): a kept-alive connection is judged as its leaf
        stands now — not expired, and mapped by the identity map in force (a binding applied
        after the handshake binds this connection too)."""
        if peer_svid.expired(now):
            when = dt.datetime.fromtimestamp(peer_svid.not_after, dt.UTC).isoformat()
            message = f"the caller's SVID {peer_svid.spiffe_id} expired at {when}"
            return None, Decision.deny("identity", "ERR_PEER_SVID_EXPIRED", message, 403)
        try:
            return peer_svid.app_identity(self._identity_map()), None
        except IdentityError as exc:
            return None, Decision.deny("identity", "ERR_PEER_IDENTITY", str(exc), 403)

    # --- head checks ---------------------------------------------------------------------

    def _judge_head(self, policy, request, peer_host, inbound, target, facts, now, peer_svid):
        decision = policy.check_head(inbound)
        if not decision.allowed:
            return Answer.deny(decision, facts)
        verified = None
        if policy.bearer is not None:
            gate = _bearer_gate()
            metadata = gate.metadata_response(policy, inbound)
            if metadata is not None:
                allow = Decision.allow("bearer", "resource_metadata", "RFC 9728 metadata")
                return Answer(allow, facts, 200, metadata)
            decision, verified = gate.check_token(self._bearer_sources(), policy, inbound, now)
            if not decision.allowed:
                return Answer.deny(decision, facts)
            facts = facts.but(bearer_subject=verified.subject)
        route = policy.mcp_route_for(inbound)
        if route is None and policy.mcp is not None:
            door = _outside_mcp_endpoints(policy, inbound, target)
            if door is not None:
                return Answer.deny(door, facts)
        return _Judged(
            request, peer_host, inbound, target, policy, route, decision, verified, facts, peer_svid
        )

    # --- body and MCP --------------------------------------------------------------------

    def _decide(self, judged: _Judged, body: bytes | None) -> Verdict:
        """The MCP policy (when the request addresses the MCP endpoint), then the plan."""
        route, inbound, under_way = judged.route, judged.inbound, judged.under_way
        if route is None:
            if body is None and _small_body(inbound.headers.pairs):
                # The relay would buffer it anyway: read it here, so it is judged complete.
                return ReadBody(SMALL_BODY, judged.facts, judged)
            return self._forward(judged, judged.decision, body, None)
        not_yours = None if under_way else mcp_route.check_session_owner(self.sessions, inbound)
        if not_yours is not None:  # another caller's session, or one never issued: 404
            return Answer.deny(not_yours, judged.facts)
        if inbound.verb != "POST":
            decision = mcp_route.check_without_body(route, inbound)
            if not decision.allowed:
                return Answer.deny(decision, judged.facts)
            planner = None if under_way else self._planner(inbound, ())
            return self._forward(judged, decision, body, planner)
        refusal = mcp_route.refuse_encoding(inbound)
        if refusal is not None:
            return Answer.deny(refusal, judged.facts)
        if body is None:
            return ReadBody(self.site.max_inspected_body, judged.facts, judged)
        limit = self.site.max_inspected_body
        verdict = mcp_route.judge_body(
            route, inbound, body, limit, self.sessions, check_owner=not under_way
        )
        facts = judged.facts.with_mcp(verdict.mcp_methods, verdict.names, verdict.arg_keys)
        if not verdict.allowed:
            return Answer.deny(verdict.decision, facts)
        decision = verdict.decision
        if verdict.items and route.required_scopes:
            # Grants that require OAuth scopes: checked against the verified token.
            refused = _bearer_gate().check_scopes(
                judged.policy, route, inbound, verdict.items, judged.verified
            )
            if refused is not None:
                return Answer.deny(refused, facts)
        planner = None
        if not under_way:
            # A task this call creates stays bound to its tool (tasks/* are judged by it).
            call = verdict.mcp_methods == ("tools/call",) and verdict.names
            tool = verdict.names[0] if call else None
            planner = self._planner(inbound, verdict.request_ids, verdict.pending, tool)
        return self._forward(judged, decision, body, planner, facts)

    def _planner(self, inbound: InboundRequest, own_ids: tuple, new=(), tool=None):
        return mcp_route.response_planner(
            self.sessions, new, own_ids, self._current_tools, inbound, tool
        )

    def _current_tools(self):
        """The tool policy in force now (deny-all if the app is no longer an MCP server)."""
        mcp = self.policy().mcp
        return mcp.policy if mcp is not None else _NO_GRANTS

    # --- the plan ------------------------------------------------------------------------

    def _forward(
        self,
        judged: _Judged,
        decision: Decision,
        body: bytes | None,
        planner,
        facts: Facts | None = None,
    ):
        """``facts`` replace the judged ones (what the MCP policy read from the body)."""
        site, inbound = self.site, judged.inbound
        facts = judged.facts if facts is None else facts
        if site.app_port is None:
            message = f"app {site.me.app_id} has no app port: it serves no inbound requests"
            return Answer.deny(Decision.deny("app", "ERR_DIRECT_INVOKE", message, 404), facts)
        drop = judged.policy.strip_headers
        if judged.route is not None:
            drop = _with_never_forwarded(drop)
        token_headers = _bearer_gate().app_headers(judged.verified) if judged.verified else ()
        headers = forward_headers.to_app(
            inbound.headers.pairs,
            caller=inbound.caller,
            me=site.me,
            app_address=self._app_address,
            peer_host=judged.peer_host,
            drop=drop,
            token_headers=token_headers,
            app_api_token=site.app_api_token,
            body=body,
        )
        after = None
        if judged.route is not None and inbound.verb == "DELETE":
            after = self._session_ender(inbound)
        head = request_head(judged.request.method, judged.target.wire_path, headers)
        plan = ForwardPlan(head, body, planner, after=after, token_expires=_token_expiry(judged))
        return Forward(decision, facts, plan)

    def _session_ender(self, inbound: InboundRequest):
        sid = mcp_route.session_id(inbound)

        def ended(status: int | None) -> None:
            if status == 200:
                self.sessions.end(inbound.caller, sid)

        return ended


_DROP_ON_MCP: dict[frozenset[bytes], frozenset[bytes]] = {}


def _with_never_forwarded(drop: frozenset[bytes]) -> frozenset[bytes]:
    """``drop`` plus what never reaches an MCP server, built once per distinct ``drop`` (a
    policy's strip set: a handful over a sidecar's life)."""
    union = _DROP_ON_MCP.get(drop)
    if union is None:
        if len(_DROP_ON_MCP) >= 16:
            _DROP_ON_MCP.clear()
        union = _DROP_ON_MCP[drop] = drop | mcp_route.NEVER_FORWARDED
    return union


def _closing(answer: Answer) -> Answer:
    """An identity refusal ends the connection: nothing more is served to that peer on it."""
    return replace(answer, headers=(*answer.headers, (b"connection", b"close")))


def _small_body(headers) -> bool:
    """A body framed by a Content-Length small enough to hold whole (and not empty)."""
    length = get_header(headers, b"content-length")
    if length is None or get_header(headers, b"transfer-encoding") is not None:
        return False
    try:
        return 0 < int(length.split(b",")[0]) <= SMALL_BODY
    except ValueError:
        return False


def _token_expiry(judged: _Judged) -> float | None:
    """When the token the request was judged with stops being accepted: its ``exp`` plus the
    clock-skew leeway the token check forgives (None: no token, or one without ``exp``)."""
    if judged.verified is None:
        return None
    expires = judged.verified.claims.get("exp")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        return None
    leeway = judged.policy.bearer.leeway if judged.policy.bearer is not None else 0.0
    return float(expires) + leeway


def _token_expired(judged: _Judged, now: float) -> bool:
    """True when the token the head was judged with has expired since (re-judge then)."""
    expires = _token_expiry(judged)
    return expires is not None and expires <= now


# The SDK's legacy HTTP+SSE transport: GET /sse opens the stream, POST /messages/?session_id=
# carries the JSON-RPC messages. Refused on an MCP server whatever the ACL says.
_LEGACY_SEGMENTS = frozenset({"sse", "messages"})


def _is_legacy_transport(request: InboundRequest, target: RequestTarget) -> bool:
    first = match_form(request.method).split("/", 2)[1]
    if first in _LEGACY_SEGMENTS:
        return True
    # The key as the app will read it: percent-decoded (Starlette decodes `session%5Fid`).
    return any(
        unquote_to_bytes(part.split(b"=", 1)[0].replace(b"+", b" ")).lower()
        in (b"session_id", b"sessionid")
        for part in target.query.split(b"&")
    )


def _outside_mcp_endpoints(
    policy: InboundPolicy, request: InboundRequest, target: RequestTarget
) -> Decision | None:
    """No uninspected door into an MCP server: a path outside its endpoint(s) is refused
    unless an ACL operation written for this caller names it (see the module docstring)."""
    mcp = policy.mcp
    endpoints = ", ".join(f"/{e}" for e in mcp.endpoints)
    app = request.callee.app_id
    if _is_legacy_transport(request, target):
        message = (
            f"{app} is an MCP server: the legacy HTTP+SSE transport (/sse, /messages/) is not "
            f"inspected by trustmesh and is refused; use Streamable HTTP at {endpoints}"
        )
        rule = "MCP servers are reached only through their inspected Streamable HTTP endpoints"
        return Decision.deny("mcp", "ERR_MCP_LEGACY_TRANSPORT", message, 403, rule=rule)
    if policy.acl_operation_allows(request):
        return None
    message = (
        f"{app} is an MCP server: /{request.method} is outside its MCP endpoint(s) "
        f"{endpoints} and is not inspected, so it is refused unless an ACL operation for "
        f"caller {request.caller} allows {request.verb} /{request.method}"
    )
    rule = "an MCP server's other paths need an ACL operation naming them for the caller"
    return Decision.deny("mcp", "ERR_MCP_UNINSPECTED_PATH", message, 403, rule=rule)
