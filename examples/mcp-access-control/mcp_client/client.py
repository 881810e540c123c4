"""The quickstart's MCP client: ``POST /run`` discovers the server's tools and calls two.

It reaches the MCP server by App ID through its own sidecar
(``http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/mcp-server/method/mcp``) with the official ``mcp``
client, so every call crosses mutual TLS and the server's access policies. The answer has the
shape of the hosted tutorial: the tools found, the results, and an ``errors`` list; a refused
session answers 403 with ``{"detail": {"error": "ACCESS_DENIED", ...}}``.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SIDECAR = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
SERVER_APP_ID = os.environ.get("MCP_SERVER_APP_ID", "mcp-server")
MCP_URL = f"{SIDECAR}/v1.0/invoke/{SERVER_APP_ID}/method/mcp"


class UpstreamRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"MCP server returned HTTP {status}")
        self.status = status


def sidecar_headers() -> dict[str, str]:
    """``dapr-api-token`` for our own sidecar, when the runner gave us one (``$DAPR_API_TOKEN``)."""
    token = os.environ.get("DAPR_API_TOKEN")
    return {"dapr-api-token": token} if token else {}


def _text(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def run_once() -> dict:
    statuses: list[int] = []

    async def remember_status(response) -> None:
        if response.status_code >= 400:
            statuses.append(response.status_code)

    http = create_mcp_http_client(headers=sidecar_headers())
    http.event_hooks["response"].append(remember_status)
    out: dict = {"tools": [], "add_result": None, "weather_alert": None, "errors": []}
    try:
        async with http, Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            listed = await client.list_tools()
            out["tools"] = [{"name": t.name, "description": t.description} for t in listed.tools]
            for tool, args, key in (
                ("add", {"a": 2, "b": 3}, "add_result"),
                ("get_weather_alert", {"city": "Chicago"}, "weather_alert"),
            ):
                try:
                    result = await client.call_tool(tool, args)
                except Exception as exc:  # a refused call: report it, carry on
                    out["errors"].append({"tool": tool, "error": _message(exc)})
                    continue
                if result.is_error:
                    out["errors"].append({"tool": tool, "error": _text(result)})
                else:
                    out[key] = _text(result)
    except Exception as exc:
        if statuses:
            raise UpstreamRefused(statuses[0]) from exc
        raise
    return out


def _message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(getattr(exc, "message", None) or exc)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        print(f"{self.command} {self.path}", flush=True)

    def do_POST(self) -> None:
        if self.path != "/run":
            self._reply(404, {"detail": "not found"})
            return
        try:
            self._reply(200, anyio.run(run_once))
        except BaseException as exc:  # the tutorial's error shape, whatever went wrong
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]
            if isinstance(exc, UpstreamRefused) and exc.status in (401, 403):
                self._reply(403, {"detail": {"error": "ACCESS_DENIED", "message": str(exc)}})
            elif isinstance(exc, UpstreamRefused):
                self._reply(502, {"detail": {"error": "UPSTREAM_ERROR", "message": str(exc)}})
            else:
                self._reply(502, {"detail": {"error": "MCP_ERROR", "message": _message(exc)}})

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("APP_PORT", "5001"))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(json.dumps({"event": "ready", "port": httpd.server_address[1]}), flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
