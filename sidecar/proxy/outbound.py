"""Outbound: the app's plain-HTTP door into the mesh (127.0.0.1 only).

The app names a target App ID (Dapr's URL or ``dapr-app-id`` header); the sidecar resolves it,
dials the target's sidecar with its own SVID, and refuses to talk unless the server proves to be
exactly ``spiffe://<td>/ns/<namespace>/<app-id>`` — a sidecar holding any other identity cannot
impersonate the target, whatever address the registry said. Errors are Dapr-shaped JSON with a
status of their own: unknown App ID 404, identity mismatch 502, unreachable 503, timeout 504.
Answers from the target — denials included — are relayed unchanged. Every decision about the
request (the door's guard, the target, the head sent on) is the
:class:`~sidecar.judge.OutboundJudge`'s; this module dials, relays and records.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

import h11
import structlog
import trio

from identity import (
    AppIdentity,
    IdentityError,
    IdentityMap,
    PeerIdentityMismatch,
    PeerSvid,
    current_identity_map,
    expect_peer_identity,
    ssl_peer_svid,
)

from ..audit import AuditLog, outbound_fields, propagate
from ..errors import SidecarError
from ..http.connection import ConnectionLost, HttpConnection
from ..http.message import request_head
from ..http.relay import ExchangeResult, relay_exchange, stream_end
from ..http.server import ConnectionInfo, send_error, send_simple_response
from ..http.socket_stream import tls_client_stream
from ..identity_source import IdentityHolder
from ..judge import Answer, Facts, OutboundJudge, OutboundSite, judge_failed
from ..judge.outbound import AppNotFound, Resolver
from ..metrics import SidecarMetrics
from ..policy import Decision
from .exchanges import LiveExchanges
from .pool import ConnectionPool

__all__ = ["AppNotFound", "OutboundConfig", "OutboundProxy", "PeerTimeout", "PeerUnreachable"]

log = structlog.get_logger("trustmesh.outbound")


class PeerUnreachable(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 503


class PeerTimeout(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 504


class PeerIdentityRefused(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 502


@dataclass
class OutboundConfig:
    me: AppIdentity
    api_token: bytes | None = None
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    response_head_timeout: float = 60.0
    # A peer sidecar that takes none of a request's bytes for this long is cut (the listeners'
    # read_timeout), as a caller that takes none of an answer's is.
    send_timeout: float | None = 30.0


class OutboundProxy:
    def __init__(
        self,
        config: OutboundConfig,
        resolve: Resolver,
        identity: IdentityHolder,
        metrics: SidecarMetrics,
        nursery: trio.Nursery,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.resolve = resolve
        self.identity = identity
        self.metrics = metrics
        self.audit = audit or AuditLog(None)
        self.judge = OutboundJudge(OutboundSite(config.me, config.api_token), resolve)
        # The peer connections with an exchange under way, for a trust change to cut.
        self._exchanges = LiveExchanges(lambda upstream: _peer_still_trusted(upstream, None))
        self.pool = ConnectionPool(
            nursery,
            self._dial,
            generation=lambda: identity.generation,
            idle_timeout=30.0,
            still_valid=_peer_still_trusted,
        )

    async def _dial(self, key) -> HttpConnection:
        (host, port), expected = key
        try:
            with trio.fail_after(self.config.connect_timeout):
                tcp = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise PeerTimeout(f"timed out connecting to {expected} at {host}:{port}") from None
        except OSError as exc:
            raise PeerUnreachable(
                f"app {expected.app_id} is unreachable at {host}:{port}: {exc.strerror or exc}"
            ) from exc
        context: ssl.SSLContext = self.identity.material().client
        tls = tls_client_stream(tcp, context)
        try:
            with trio.fail_after(self.config.handshake_timeout):
                await tls.do_handshake()
            expect_peer_identity(tls, expected)
        except trio.TooSlowError:
            await tls.aclose()
            self.metrics.handshakes.inc("timeout")
            raise PeerTimeout(f"mTLS handshake with {expected} timed out") from None
        except PeerIdentityMismatch as exc:
            await tls.aclose()
            self.metrics.handshakes.inc("identity_mismatch")
            raise PeerIdentityRefused(
                f"TLS identity mismatch calling {expected.app_id}: {exc}"
            ) from exc
        except (IdentityError, trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            await tls.aclose()
            self.metrics.handshakes.inc("failed")
            cause = exc.__cause__ or exc
            raise PeerIdentityRefused(
                f"mTLS handshake with {expected} at {host}:{port} failed: {cause}"
            ) from exc
        self.metrics.handshakes.inc("ok")
        conn = HttpConnection(tls, h11.CLIENT, send_timeout=self.config.send_timeout)
        conn.peer = TrustedPeer(ssl_peer_svid(tls), expected, current_identity_map())
        return conn

    async def handle(
        self, conn: HttpConnection, request: h11.Request, info: ConnectionInfo
    ) -> None:
        hop = self.audit.begin("outbound", request.headers, request.method)
        result = ExchangeResult()
        cuts = self._exchanges.mark()  # a cut from now on applies to this exchange
        refusal = self.audit.refusal()  # fail closed while records cannot be kept
        try:
            verdict = self.judge.head(request)
        except Exception as exc:  # a bug: refused, answered and recorded, never sent
            log.exception("the judge failed on a request head; refused", verb=hop.verb)
            verdict = judge_failed(exc, Facts(verb=hop.verb, caller=self.config.me))
        decision = refusal or verdict.decision
        target = "-"
        if verdict.facts.callee is not None:
            target = f"{verdict.facts.callee.namespace}/{verdict.facts.callee.app_id}"
        try:
            if refusal is not None:
                result.status = refusal.status
                await send_simple_response(conn, refusal.status, refusal.response_body())
            elif isinstance(verdict, Answer):
                result.status = verdict.status
                await send_simple_response(
                    conn, verdict.status, verdict.body, verdict.content_type, list(verdict.headers)
                )
                result.bytes_down += len(verdict.body)
            else:
                await self._forward(conn, verdict.plan, result, cuts)
        except SidecarError as exc:
            if result.head_sent:
                result.cut_by(exc)  # the record says the answer was cut, and why
                raise ConnectionLost(f"upstream failed mid-response: {exc}") from exc
            decision = Decision.deny("peer", exc.code, str(exc), exc.http_status)
            result.status = exc.http_status
            await send_error(conn, exc.http_status, exc.code, str(exc))
        except BaseException as exc:  # a cancellation, or a bug: the record says so
            result.cut_by(exc)
            raise
        finally:
            self._record(request, target, decision, result, hop)

    async def _forward(
        self,
        conn: HttpConnection,
        plan,
        result: ExchangeResult,
        cuts: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        key = plan.upstream
        expected = key[1]
        head = plan.head
        headers = propagate(head.headers)  # this hop's span as traceparent, when tracing is on
        if headers is not head.headers:
            head = request_head(head.method, head.target, headers)
        # Released to the pool if the exchange ends normally, discarded on any exception (an
        # error, a cancellation, a bug): never parked in an unknown state, never leaked.
        async with self.pool.connection(key) as upstream:
            peer: TrustedPeer | None = getattr(upstream, "peer", None)
            # Listed until the exchange ends, so a cut reaches it (the app's body, read whole
            # first, may take a while); one made since the request arrived applies too.
            self._exchanges.enter(upstream, cuts)
            try:
                await relay_exchange(
                    result,
                    conn,
                    upstream,
                    head,
                    head_timeout=self.config.response_head_timeout,
                    # A streamed answer ends with the peer's leaf, or when the bundle drops its CA.
                    stream_end=stream_end(peer.svid.not_after if peer is not None else None),
                    streams=self._exchanges.streams,
                )
            except ConnectionLost as exc:
                if result.head_sent:
                    raise
                raise PeerUnreachable(
                    f"connection to {expected.app_id} failed before it answered: {exc}"
                ) from exc
            finally:
                self._exchanges.leave(upstream)

    def retire_streams(self) -> None:
        """Cut every answer streaming from a peer now, or about to: for a trust bundle that
        dropped a CA (pooled connections made under the old bundle are not reused; a stream is
        one exchange that may last hours). The app calls again, over a new, verified one."""
        self._exchanges.retire_all()

    def recheck_streams(self) -> None:
        """Cut every answer streaming (or about to) from a peer the identity map now in force
        no longer makes the App it was dialled as: a binding moved that App ID elsewhere."""
        self._exchanges.recheck()

    def _record(self, request, target: str, decision: Decision, result, hop) -> None:
        """One audit record and one count per request sent or refused."""
        refused = None if decision.allowed else decision
        fields = outbound_fields(self.config.me, request, target, refused, result)
        if fields is not None:  # a health probe answered here is not a decision
            self.audit.record(hop, **fields)
        self.metrics.observe_request(
            "outbound",
            caller=self.config.me.app_id,
            callee=target,
            decision="allow" if decision.allowed else "deny",
            layer=decision.layer,
            reason=decision.reason,
            mcp_method=None,
            tool=None,
            status=result.status,
            seconds=hop.elapsed(),
        )


class TrustedPeer:
    """What an outbound connection's handshake proved: the peer's SVID was ``expected`` under
    ``trusted_under`` (an identity map). A connection is pooled for minutes, and both facts can
    lapse while it waits: the SVID expires, or a binding gives the App ID to another SPIFFE ID
    (that peer would now be refused at a handshake). So a pooled connection is checked again
    before each reuse (:func:`_peer_still_trusted`), at the cost of a comparison while the map
    is unchanged."""

    __slots__ = ("expected", "svid", "trusted_under")

    def __init__(self, svid: PeerSvid, expected: AppIdentity, trusted_under: IdentityMap) -> None:
        self.svid, self.expected, self.trusted_under = svid, expected, trusted_under


def _peer_still_trusted(conn: HttpConnection, key) -> bool:
    peer: TrustedPeer | None = getattr(conn, "peer", None)
    if peer is None:
        return True  # not a connection this proxy dialled (tests hand the pool their own)
    if peer.svid.expired(time.time()):
        return False
    identity_map = current_identity_map()
    if identity_map is peer.trusted_under:
        return True
    try:
        trusted = peer.svid.app_identity(
            identity_map
        ) == peer.expected and peer.svid.spiffe_id in identity_map.spiffe_ids_for(peer.expected)
    except IdentityError:
        return False
    if trusted:
        peer.trusted_under = identity_map
    return trusted
