"""Inbound: the mTLS listener other sidecars call; the only way in to the app.

Thin I/O around the :class:`~sidecar.judge.InboundJudge`, which takes every decision: the
caller's identity is the SPIFFE ID of the certificate it completed the handshake with, the path
is normalised once, the policy's first deny answers the caller here (a denied request never
reaches the app), and the judge alone decides which headers the app receives. This module reads
a body when the judge asks for it, carries out the verdict, and audits every request once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import h11
import structlog
import trio

from identity import AppIdentity, IdentityError, PeerSvid, current_identity_map

from ..audit import AuditLog, note_body, propagate
from ..errors import SidecarError
from ..http.connection import ConnectionLost, HttpConnection
from ..http.message import request_head
from ..http.relay import ExchangeResult, read_whole_body, relay_exchange, stream_end
from ..http.server import ConnectionInfo, send_error, send_simple_response
from ..judge import Answer, Facts, Forward, InboundJudge, InboundSite, ReadBody, judge_failed
from ..judge.inbound import STANDARD_METHODS
from ..metrics import SidecarMetrics
from ..pipeline import InboundPolicy
from ..policy import Decision
from . import mcp_route
from .exchanges import LiveExchanges
from .pool import ConnectionPool

__all__ = ["STANDARD_METHODS", "AppUnavailable", "InboundConfig", "InboundProxy"]

log = structlog.get_logger("trustmesh.inbound")


class AppUnavailable(SidecarError):
    code = "ERR_APP_UNAVAILABLE"
    http_status = 503


@dataclass
class InboundConfig:
    me: AppIdentity
    app_port: int | None
    app_host: str = "127.0.0.1"
    max_inspected_body: int = 4 * 1024 * 1024
    # A response the sidecar must read whole to filter (any JSON body on the MCP route): tool
    # results may legitimately be larger than the requests that asked for them.
    max_inspected_response: int = 16 * 1024 * 1024
    response_head_timeout: float = 300.0  # a tool call may legitimately take minutes
    app_api_token: bytes | None = None  # APP_API_TOKEN, presented to the app as dapr-api-token
    # An app that takes none of a request's bytes for this long is cut (the listeners'
    # read_timeout): otherwise it holds the caller's connection and exchange for ever.
    send_timeout: float | None = 30.0


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
        self.judge = InboundJudge(
            InboundSite(
                config.me,
                config.app_port,
                config.app_host,
                config.max_inspected_body,
                config.app_api_token,
            ),
            policy,
            self.mcp_sessions,
            self.bearer_sources,
        )
        self._nursery = nursery
        self._bearer_sources = None
        self._callee = str(config.me)  # for every record: made once
        # The app connections with an exchange under way, for a trust change to cut.
        self._exchanges = LiveExchanges(_caller_still_judged_as)

    async def _dial_app(self, _key) -> HttpConnection:
        host, port = self.config.app_host, self.config.app_port
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise AppUnavailable(
                f"app {self.config.me.app_id} is not reachable on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from exc
        return HttpConnection(stream, h11.CLIENT, send_timeout=self.config.send_timeout)

    async def handle(
        self, conn: HttpConnection, request: h11.Request, info: ConnectionInfo
    ) -> None:
        hop = self.audit.begin("inbound", request.headers, request.method)
        result = ExchangeResult()
        cuts = self._exchanges.mark()  # before the judge: a cut from now on applies to it
        try:
            verdict = self.judge.head(
                request,
                info.peer_identity,
                info.peer_identity_error,
                info.peer_host,
                time.time(),
                info.peer_svid,
            )
        except Exception as exc:  # a bug: refused, answered and recorded, never forwarded
            log.exception("the judge failed on a request head; refused", verb=hop.verb)
            verdict = judge_failed(exc, Facts(verb=hop.verb, caller=info.peer_identity))
        refusal = self.audit.refusal()  # fail closed while records cannot be kept
        if refusal is not None:
            verdict = Answer.deny(refusal, verdict.facts)
        decision, facts = getattr(verdict, "decision", None), verdict.facts
        try:
            if isinstance(verdict, ReadBody):
                body = await read_whole_body(conn, verdict.limit)
                note_body(body)  # for the trace's span name; read only when tracing is on
                try:
                    verdict = self.judge.body(verdict, body, time.time())
                except Exception as exc:  # a bug: refused, answered and recorded
                    log.exception("the judge failed on a request body; refused")
                    verdict = judge_failed(exc, verdict.facts)
            decision, facts = verdict.decision, verdict.facts
            if isinstance(verdict, Answer):
                await self._answer(conn, verdict, result)
            else:
                await self._forward(conn, verdict, result, request, info, cuts)
        except SidecarError as exc:
            if result.head_sent:
                result.cut_by(exc)  # the record says the answer was cut, and why
                raise ConnectionLost(f"app failed mid-response: {exc}") from exc
            if decision is None or decision.allowed:
                # A cut names its layer (the policy's or the identity's); else the app failed
                layer = getattr(exc, "layer", None)
                layer = layer or ("app" if isinstance(verdict, Forward) else "request")
                decision = Decision.deny(layer, exc.code, str(exc), exc.http_status)
            result.status = exc.http_status
            body = getattr(exc, "response_body", None)
            if body is not None:
                await send_simple_response(conn, exc.http_status, body)
            else:
                await send_error(conn, exc.http_status, exc.code, str(exc))
        except BaseException as exc:  # a cancellation, or a bug: the record says so
            result.cut_by(exc)
            raise
        finally:
            self._record(facts, decision, result, hop)

    def retire_streams(self) -> None:
        """Cut every answer streaming now, or about to (its head awaited), and every request
        body still streaming: for a trust bundle that dropped a CA. The listener retires the
        connections verified under the old bundle once their exchange ends; a stream (an SSE
        one, an upload: either may last hours) would otherwise keep its caller served until
        then. A whole answer on its way is let finish. A caller that is still trusted
        reconnects, as for an idle connection."""
        self._exchanges.retire_all()

    def recheck_streams(self) -> None:
        """Cut every exchange streaming (an answer, or a request body) with a caller whose SVID
        no longer maps to the App ID it was judged as: a binding applied while an SSE stream or
        an upload is open (the next request on that connection would be refused; the stream is
        one request that may last hours)."""
        self._exchanges.recheck()

    def policy_applied(self) -> None:
        """Cut every exchange under way (a streamed answer, or a request body still streaming)
        that the policy now in force refuses: an ACL or tool grant revoked, a bearer layer
        added, while an SSE stream or an upload is open. Each is judged again as its request
        would be if it arrived now; an answer not yet started never starts, a whole answer on
        its way is let finish."""
        self._exchanges.policy_applied()

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

    async def warm_keys(self, policy: InboundPolicy) -> None:
        """Before a new policy takes effect: wait (bounded) for the first fetch of the keys of
        a bearer component it brings, so that neither new requests nor the exchanges under way
        (judged again once it is in force) are judged against no keys."""
        if policy.bearer is not None:
            await self.bearer_sources().warm(policy.bearer)

    async def _answer(self, conn: HttpConnection, answer: Answer, result: ExchangeResult) -> None:
        result.status = answer.status
        await send_simple_response(
            conn, answer.status, answer.body, answer.content_type, list(answer.headers)
        )
        result.bytes_down += len(answer.body)

    async def _forward(
        self,
        conn: HttpConnection,
        verdict: Forward,
        result: ExchangeResult,
        request,
        info: ConnectionInfo,
        cuts: tuple[int, int, int],
    ):
        plan = verdict.plan
        head = plan.head
        peer_svid, judge = info.peer_svid, self.judge

        def rejudge():  # the request as it would be judged if it arrived now (policy changes)
            return judge.rejudge(
                request,
                info.peer_identity,
                info.peer_identity_error,
                info.peer_host,
                peer_svid,
                plan.body,
                time.time(),
            )

        headers = propagate(head.headers)  # this hop's span as traceparent, when tracing is on
        if headers is not head.headers:
            head = request_head(head.method, head.target, headers)
        async with self.app_pool.connection("app") as upstream:  # discarded on any exception
            # Who the exchange serves: judged again when the map changes (the caller the judge
            # derived from the SVID a moment ago, under the same map).
            upstream.stream_caller = (peer_svid, verdict.facts.caller) if peer_svid else None
            # Listed until the exchange ends, so a cut reaches it; one made while its body
            # arrived (before it could be listed) applies too.
            self._exchanges.enter(upstream, cuts, rejudge)
            try:
                await relay_exchange(
                    result,
                    conn,
                    upstream,
                    head,
                    body=plan.body,
                    plan=plan.response_plan,
                    buffer_limit=self.config.max_inspected_response,
                    head_timeout=self.config.response_head_timeout,
                    stream_end=stream_end(
                        peer_svid.not_after if peer_svid is not None else None, plan.token_expires
                    ),
                    streams=self._exchanges.streams,
                )
            finally:
                self._exchanges.leave(upstream)
        if plan.after is not None:
            plan.after(result.status)

    def _record(self, facts, decision: Decision | None, result: ExchangeResult, hop) -> None:
        elapsed = hop.elapsed()
        allowed = decision is None or decision.allowed
        caller = facts.caller
        methods, names = facts.mcp_methods, facts.names
        tool = names[0] if methods == ("tools/call",) and len(names) == 1 else None
        mcp_method = ",".join(methods) or None
        self.audit.record(
            hop,
            direction="inbound",
            callee=self._callee,
            caller=str(caller) if caller is not None else "-",
            bearer_subject=facts.bearer_subject,
            verb=facts.verb,
            path=facts.path,
            mcp_method=mcp_method,
            names=list(facts.names) or None,
            arg_keys=list(facts.arg_keys) or None,
            decision="allow" if allowed else "deny",
            layer=decision.layer if decision else "request",
            rule=decision.rule if decision else None,
            reason=decision.reason if decision else "-",
            message=None if allowed else decision.message,
            policy_version=facts.policy_version,
            status=result.status,
            response_bytes=result.bytes_down,
            duration_ms=round(elapsed * 1000, 3),
            cut=result.cut,
            **({"trace_id": facts.trace_id} if facts.trace_id else {}),
        )
        self.metrics.observe_request(
            "inbound",
            caller=caller.app_id if caller is not None else "-",
            callee=self.config.me.app_id,
            decision="allow" if allowed else "deny",
            layer=decision.layer if decision else "request",
            reason=decision.reason if decision else "-",
            mcp_method=mcp_method,
            tool=tool,
            status=result.status,
            seconds=elapsed,
        )


def _caller_still_judged_as(upstream: HttpConnection) -> bool:
    """Whether the caller of the exchange on ``upstream`` is still the App it was judged as."""
    caller = upstream.stream_caller
    return caller is None or _app_of(caller[0]) == caller[1]


def _app_of(peer_svid: PeerSvid) -> AppIdentity | None:
    """The App ``peer_svid`` is under the identity map in force (cached per map), or None."""
    try:
        return peer_svid.app_identity(current_identity_map())
    except IdentityError:
        return None
