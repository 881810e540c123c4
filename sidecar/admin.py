"""The admin endpoint (127.0.0.1 only): health, readiness, metrics and status.

Bound to loopback is not enough: a web page on another origin whose name rebinds to 127.0.0.1
can reach it from the user's browser, so, like the outbound port, it refuses any request whose
``Host`` or ``Origin`` is not a loopback name (403 JSON).

``/readyz`` is what runners and ``--wait`` rely on, so it is honest: ready means an SVID is
loaded, the listeners are up and (for an app with a port) the app accepts connections.
``/v1/status`` reports the policy version in force, which is what ``--wait`` compares, and the
audit log's head (seq + hash) and health, which is what ``trustmesh audit verify`` compares.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import h11
import trio

from .http.connection import HttpConnection
from .http.invocation import OutboundForbidden, check_loopback_request
from .http.server import ConnectionInfo, send_error, send_simple_response
from .metrics import SidecarMetrics

# Prometheus text format 0.0.4, what prometheus_client's generate_latest writes.
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class AdminHandler:
    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        metrics: SidecarMetrics,
        app_port: int | None,
        app_host: str = "127.0.0.1",
    ) -> None:
        self.status = status
        self.metrics = metrics
        self.app_port = app_port
        self.app_host = app_host
        self.listeners_up = False

    async def _app_reachable(self) -> bool:
        if self.app_port is None:
            return True
        with trio.move_on_after(0.5):
            try:
                stream = await trio.open_tcp_stream(self.app_host, self.app_port)
            except OSError:
                return False
            await stream.aclose()
            return True
        return False

    async def handle(
        self, conn: HttpConnection, request: h11.Request, info: ConnectionInfo
    ) -> None:
        path = request.target.split(b"?", 1)[0]
        try:
            check_loopback_request(request.headers, "admin endpoints only serve local clients")
        except OutboundForbidden as exc:
            await send_error(conn, exc.http_status, exc.code, str(exc))
            return
        if request.method not in (b"GET", b"HEAD"):
            await send_error(conn, 405, "ERR_METHOD_NOT_ALLOWED", "admin endpoints are read-only")
            return
        if path == b"/healthz":
            await _json(conn, 200, {"status": "ok"})
        elif path == b"/readyz":
            status = self.status()
            checks = {
                "svid": status.get("svid") is not None,
                "listeners": self.listeners_up,
                "app": await self._app_reachable(),
            }
            ready = all(checks.values())
            await _json(conn, 200 if ready else 503, {"ready": ready, "checks": checks})
        elif path == b"/metrics":
            await send_simple_response(conn, 200, self.metrics.render(), METRICS_CONTENT_TYPE)
        elif path == b"/v1/status":
            await _json(conn, 200, self.status())
        else:
            await send_error(conn, 404, "ERR_NOT_FOUND", f"no admin endpoint {path.decode()!r}")


async def _json(conn: HttpConnection, status: int, payload: dict[str, Any]) -> None:
    await send_simple_response(conn, status, json.dumps(payload, indent=2).encode())
