"""Outbound: the app's plain-HTTP door into the mesh (127.0.0.1 only).

The app names a target App ID (Dapr's URL or ``dapr-app-id`` header); the sidecar resolves it,
dials the target's sidecar with its own SVID, and refuses to talk unless the server proves to be
exactly ``spiffe://<td>/ns/<namespace>/<app-id>`` — a sidecar holding any other identity cannot
impersonate the target, whatever address the registry said. Errors are Dapr-shaped JSON with a
status of their own: unknown App ID 404, identity mismatch 502, unreachable 503, timeout 504.
Answers from the target — denials included — are relayed unchanged.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

import h11
import structlog
import trio

from identity import AppIdentity, IdentityError, PeerIdentityMismatch, expect_peer_identity

from ..errors import SidecarError
from ..http.connection import ConnectionLost, HttpConnection
from ..http.headers import LOCAL_ONLY, forwardable, framing_for
from ..http.invocation import Invocation, check_outbound_request, parse_invocation
from ..http.message import request_head
from ..http.path import InvalidPath
from ..http.relay import ExchangeResult, relay_exchange
from ..http.server import ConnectionInfo, send_error, send_simple_response
from ..http.socket_stream import tls_client_stream
from ..identity_source import IdentityHolder
from ..metrics import SidecarMetrics
from .pool import ConnectionPool

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


class AppNotFound(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 404


Resolver = Callable[[str, str], tuple[str, int] | None]


@dataclass
class OutboundConfig:
    me: AppIdentity
    api_token: bytes | None = None
    connect_timeout: float = 5.0
    handshake_timeout: float = 10.0
    response_head_timeout: float = 60.0


class OutboundProxy:
    def __init__(
        self,
        config: OutboundConfig,
        resolve: Resolver,
        identity: IdentityHolder,
        metrics: SidecarMetrics,
        nursery: trio.Nursery,
    ) -> None:
        self.config = config
        self.resolve = resolve
        self.identity = identity
        self.metrics = metrics
        self.pool = ConnectionPool(
            nursery, self._dial, generation=lambda: identity.generation, idle_timeout=30.0
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
        return HttpConnection(tls, h11.CLIENT)

    async def handle(
        self, conn: HttpConnection, request: h11.Request, info: ConnectionInfo
    ) -> None:
        started = trio.current_time()
        result = ExchangeResult()
        target_label = "-"
        try:
            check_outbound_request(
                request.method, request.target, request.headers, self.config.api_token
            )
            if request.method == b"GET" and request.target in (
                b"/v1.0/healthz",
                b"/v1.0/healthz/outbound",
            ):
                await send_simple_response(conn, 204, b"")
                result.status = 204
                return
            invocation = parse_invocation(request.target, request.headers, self.config.me.namespace)
            target_label = f"{invocation.namespace}/{invocation.app_id}"
            await self._forward(conn, request, invocation, result)
        except (SidecarError, InvalidPath) as exc:
            if result.head_sent:
                raise ConnectionLost(f"upstream failed mid-response: {exc}") from exc
            result.status = exc.http_status
            await send_error(conn, exc.http_status, exc.code, str(exc))
        finally:
            self.metrics.observe_request(
                "outbound",
                caller=self.config.me.app_id,
                callee=target_label,
                decision="-",
                layer="-",
                reason="-",
                mcp_method=None,
                tool=None,
                status=result.status,
                seconds=trio.current_time() - started,
            )

    async def _forward(
        self,
        conn: HttpConnection,
        request: h11.Request,
        invocation: Invocation,
        result: ExchangeResult,
    ) -> None:
        address = self.resolve(invocation.app_id, invocation.namespace)
        if address is None:
            raise AppNotFound(
                f"failed to invoke, id: {invocation.app_id}, err: app id {invocation.app_id} "
                f"not found in namespace {invocation.namespace}"
            )
        try:
            expected = AppIdentity(
                self.config.me.trust_domain, invocation.namespace, invocation.app_id
            )
        except IdentityError as exc:
            raise AppNotFound(f"invalid app id {invocation.app_id!r}: {exc}") from exc
        key = (address, expected)
        upstream = await self.pool.acquire(key)
        headers = forwardable(request.headers, LOCAL_ONLY)
        headers.append((b"host", f"{invocation.app_id}.{invocation.namespace}".encode()))
        headers += framing_for(request.headers)
        head = request_head(request.method, invocation.target.wire_path, headers)
        try:
            await relay_exchange(
                result, conn, upstream, head, head_timeout=self.config.response_head_timeout
            )
        except trio.Cancelled:
            self.pool.discard(upstream)
            raise
        except SidecarError as exc:
            self.pool.discard(upstream)
            if isinstance(exc, ConnectionLost) and not result.head_sent:
                raise PeerUnreachable(
                    f"connection to {expected.app_id} failed before it answered: {exc}"
                ) from exc
            raise
        self.pool.release(key, upstream)
