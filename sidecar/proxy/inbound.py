"""Inbound: the mTLS listener other sidecars call; the only way in to the app.

The caller's identity is the SPIFFE ID of the certificate it completed the handshake with, and
nothing it says in headers can change that: every ``dapr-caller-*``/forwarding header it sent is
removed, in any letter case, before the sidecar sets its own. The path is normalised once and
that one string is what policy checks and what the app is sent. The pipeline's first deny
answers the caller here, so a denied request never reaches the app; every decision is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import h11
import structlog
import trio

from identity import AppIdentity

from ..audit import AuditLog, note_body, propagate
from ..errors import SidecarError
from ..http.connection import ConnectionLost, HttpConnection
from ..http.headers import CALLER_HEADERS, LOCAL_ONLY, forwardable, framing_for
from ..http.message import request_head
from ..http.path import RequestTarget, normalize_target
from ..http.relay import ExchangeResult, read_whole_body, relay_exchange
from ..http.server import ConnectionInfo, send_error, send_simple_response
from ..mcp import MCPServerAccessPolicy
from ..metrics import SidecarMetrics
from ..pipeline import InboundPolicy, InboundRequest
from ..policy import Decision
from . import mcp_route
from .pool import ConnectionPool

log = structlog.get_logger("trustmesh.inbound")


class AppUnavailable(SidecarError):
    code = "ERR_APP_UNAVAILABLE"
    http_status = 503


def _bearer_gate():
    """The bearer layer's module, imported on first use: only apps with a bearer component
    pay for pyjwt and its key handling in memory."""
    from . import bearer_gate

    return bearer_gate


def _identity_headers(verified) -> list[tuple[bytes, bytes]]:
    return [] if verified is None else _bearer_gate().app_headers(verified)


_NO_GRANTS = MCPServerAccessPolicy.deny_all("no-longer-an-mcp-server")


class MethodNotAllowed(SidecarError):
    code = "ERR_METHOD_NOT_ALLOWED"
    http_status = 405


STANDARD_METHODS = frozenset(
    {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE", b"PATCH"}
)


class NoAppPort(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 404


@dataclass
class InboundConfig:
    me: AppIdentity
    app_port: int | None
    app_host: str = "127.0.0.1"
    max_inspected_body: int = 4 * 1024 * 1024
    response_head_timeout: float = 300.0  # a tool call may legitimately take minutes


def header_map(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


class InboundProxy:
    def __init__(
        self,
        config: InboundConfig,
        policy: Callable[[], InboundPolicy],
        audit: AuditLog,
        metrics: SidecarMetrics,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.policy = policy
        self.audit = audit
        self.metrics = metrics
        self.app_pool = ConnectionPool(nursery, self._dial_app, idle_timeout=20.0)
        self.mcp_sessions = mcp_route.McpSessions()
        self._nursery = nursery
        self._bearer_sources = None

    async def _dial_app(self, _key) -> HttpConnection:
        host, port = self.config.app_host, self.config.app_port
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise AppUnavailable(
                f"app {self.config.me.app_id} is not reachable on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from exc
        return HttpConnection(stream, h11.CLIENT)

    async def handle(
        self, conn: HttpConnection, request: h11.Request, info: ConnectionInfo
    ) -> None:
        hop = self.audit.begin("inbound", request.headers, request.method)
        policy = self.policy()  # one policy version judges the whole request
        result = ExchangeResult()
        decision: Decision | None = None
        caller = info.peer_identity
        method = "?"
        verified = None
        try:
            decision = self.audit.refusal()  # fail closed while records cannot be kept
            if decision is not None:
                await self._answer(conn, decision, result)
                return
            if caller is None:
                decision = Decision.deny(
                    "identity", "ERR_PEER_IDENTITY", info.peer_identity_error or "no identity", 403
                )
                await self._answer(conn, decision, result)
                return
            if request.method not in STANDARD_METHODS:
                # The ACL judges unknown methods as POST (Dapr's calling sidecar sends them so);
                # the app must never see a method other than the one that was judged.
                raise MethodNotAllowed(
                    f"HTTP method {request.method.decode('ascii', 'replace')!r} is not supported"
                )
            target = normalize_target(request.target)
            method = target.method
            inbound = InboundRequest(
                caller=caller,
                callee=self.config.me,
                verb=request.method.decode("ascii", "replace").upper(),
                method=target.method,
                headers=header_map(request.headers),
            )
            decision = policy.check_head(inbound)
            if not decision.allowed:
                await self._answer(conn, decision, result)
                return
            if policy.bearer is not None:
                bearer_gate = _bearer_gate()
                metadata = bearer_gate.metadata_response(policy, inbound)
                if metadata is not None:
                    result.status = 200
                    await send_simple_response(conn, 200, metadata)
                    return
                decision, verified = bearer_gate.check_token(self.bearer_sources(), policy, inbound)
                if not decision.allowed:
                    await self._answer(conn, decision, result)
                    return
            body: bytes | None = None
            plan = None
            drop = frozenset()
            route = policy.mcp_route_for(inbound)
            if route is not None:
                decision, body, plan, items = await self._judge_mcp(conn, route, inbound)
                if decision.allowed and items and route.required_scopes:
                    # Grants that require OAuth scopes: checked against the verified token.
                    decision = (
                        _bearer_gate().check_scopes(policy, route, inbound, items, verified)
                        or decision
                    )
                if not decision.allowed:
                    await self._answer(conn, decision, result)
                    return
                drop = mcp_route.NEVER_FORWARDED
            await self._forward(
                conn,
                request,
                inbound,
                target,
                policy,
                body,
                plan,
                drop,
                _identity_headers(verified),
                info,
                result,
            )
            if route is not None and inbound.verb == "DELETE" and result.status == 200:
                self.mcp_sessions.end(caller, mcp_route.session_id(inbound))
        except SidecarError as exc:
            if result.head_sent:
                raise ConnectionLost(f"app failed mid-response: {exc}") from exc
            if decision is None or decision.allowed:
                layer = "request" if decision is None else "app"
                decision = Decision.deny(layer, exc.code, str(exc), exc.http_status)
            result.status = exc.http_status
            body = getattr(exc, "response_body", None)
            if body is not None:
                await send_simple_response(conn, exc.http_status, body)
            else:
                await send_error(conn, exc.http_status, exc.code, str(exc))
        finally:
            self._record(caller, request, method, decision, result, policy, hop, verified)

    def bearer_sources(self):
        """The JWKS sources, created the first time a policy attaches a bearer component."""
        if self._bearer_sources is None:
            from .bearer_gate import BearerKeySources

            self._bearer_sources = BearerKeySources(self._nursery)
        return self._bearer_sources

    def on_policy(self, policy: InboundPolicy) -> None:
        """Called with each new policy before it takes effect: warm the bearer keys."""
        if policy.bearer is not None:
            self.bearer_sources().on_policy(policy)  # ensure the source; warn if no RFC 9728

    async def _judge_mcp(self, conn: HttpConnection, route, inbound: InboundRequest):
        """The MCP policy: (decision, body to forward, response plan, items it granted)."""
        not_yours = mcp_route.check_session_owner(self.mcp_sessions, inbound)
        if not_yours is not None:
            return not_yours, None, None, ()
        if inbound.verb != "POST":
            decision = mcp_route.check_without_body(route, inbound)
            return decision, None, self._planner(route, inbound, ()), ()
        refusal = mcp_route.refuse_encoding(inbound)
        if refusal is not None:
            return refusal, None, None, ()
        body = await read_whole_body(conn, self.config.max_inspected_body)
        note_body(body)
        verdict = mcp_route.judge_body(
            route, inbound, body, self.config.max_inspected_body, self.mcp_sessions
        )
        if not verdict.allowed:
            return verdict.decision, None, None, ()
        planner = self._planner(route, inbound, verdict.request_ids, verdict.pending)
        return verdict.decision, body, planner, verdict.items

    def _planner(self, route, inbound: InboundRequest, own_ids: tuple, new=()):
        return mcp_route.response_planner(
            self.mcp_sessions, new, own_ids, self._current_tools, inbound
        )

    def _current_tools(self):
        """The tool policy in force now (deny-all if the app is no longer an MCP server)."""
        mcp = self.policy().mcp
        return mcp.policy if mcp is not None else _NO_GRANTS

    async def _answer(
        self, conn: HttpConnection, decision: Decision, result: ExchangeResult
    ) -> None:
        result.status = decision.status
        await send_simple_response(
            conn,
            decision.status,
            decision.response_body(),
            decision.content_type.encode(),
            [(n.encode("latin-1"), v.encode("latin-1")) for n, v in decision.headers],
        )

    async def _forward(
        self,
        conn: HttpConnection,
        request: h11.Request,
        inbound: InboundRequest,
        target: RequestTarget,
        policy: InboundPolicy,
        body: bytes | None,
        plan,
        drop: frozenset[bytes],
        identity_headers: list[tuple[bytes, bytes]],
        info: ConnectionInfo,
        result: ExchangeResult,
    ) -> None:
        if self.config.app_port is None:
            raise NoAppPort(
                f"app {self.config.me.app_id} has no app port: it serves no inbound requests"
            )
        caller = inbound.caller
        headers = [
            (name, value)
            for name, value in forwardable(
                request.headers, CALLER_HEADERS | LOCAL_ONLY | policy.strip_headers | drop
            )
            # only the sidecar speaks for the token, in either spelling
            if not name.replace(b"_", b"-").startswith(b"x-trustmesh-")
        ]
        headers += [
            (b"host", f"{self.config.app_host}:{self.config.app_port}".encode()),
            (b"dapr-caller-app-id", caller.app_id.encode()),
            (b"dapr-caller-namespace", caller.namespace.encode()),
            (b"dapr-callee-app-id", self.config.me.app_id.encode()),
            (b"x-forwarded-for", info.peer_host.encode()),
            (b"forwarded", f'for="{info.peer_host}";proto=https'.encode()),
        ]
        headers += identity_headers
        if body is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        else:
            headers += framing_for(request.headers)
        head = request_head(request.method, target.wire_path, propagate(headers))
        upstream = await self.app_pool.acquire("app")
        try:
            await relay_exchange(
                result,
                conn,
                upstream,
                head,
                body=body,
                plan=plan,
                buffer_limit=self.config.max_inspected_body,
                head_timeout=self.config.response_head_timeout,
            )
        except BaseException:
            self.app_pool.discard(upstream)
            raise
        self.app_pool.release("app", upstream)

    def _record(self, caller, request, method, decision, result, policy, hop, verified) -> None:
        elapsed = hop.elapsed()
        allowed = decision is None or decision.allowed
        caller_text = str(caller) if caller is not None else "-"
        self.audit.record(
            hop,
            direction="inbound",
            callee=str(self.config.me),
            caller=caller_text,
            bearer_subject=verified.subject if verified is not None else None,
            verb=request.method.decode("ascii", "replace"),
            path=method,
            decision="allow" if allowed else "deny",
            layer=decision.layer if decision else "request",
            reason=decision.reason if decision else "-",
            rule=decision.rule if decision else None,
            message=None if allowed else decision.message,
            status=result.status,
            response_bytes=result.bytes_down,
            policy_version=policy.version,
        )
        self.metrics.observe_request(
            "inbound",
            caller=caller.app_id if caller is not None else "-",
            callee=self.config.me.app_id,
            decision="allow" if allowed else "deny",
            layer=decision.layer if decision else "request",
            reason=decision.reason if decision else "-",
            mcp_method=hop.mcp_method,
            tool=hop.tool,
            status=result.status,
            seconds=elapsed,
        )
