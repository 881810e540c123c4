"""An agent that reports what its App ID may see and do on one MCP server.

``POST /run`` opens an MCP session with the official ``mcp`` client, through this app's own
sidecar (``http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/$MCP_SERVER_APP_ID/method/mcp``), lists
the tools, then tries ``add``, ``echo`` and ``get_weather_alert`` whether or not they were
listed, and answers::

    {"agent": "<APP_ID>", "session": "open" | "refused (HTTP 403): …",
     "tools": ["add", …],
     "calls": {"add": {"ok": true, "result": "5"},
               "get_weather_alert": {"ok": false, "status": 403, "error": "…"}}}

Nothing here knows about trustmesh: the App ID the server's sidecar sees is the one this app's
sidecar proves with its certificate, so the same code gets different answers under different
App IDs.
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

APP_ID = os.environ.get("APP_ID", "analyst-agent")
SIDECAR = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
SERVER_APP_ID = os.environ.get("MCP_SERVER_APP_ID", "mcp-server")
MCP_URL = f"{SIDECAR}/v1.0/invoke/{SERVER_APP_ID}/method/mcp"

# The calls tried on every run, listed or not: an unlisted tool must also be un-callable.
CALLS = {
    "add": {"a": 2, "b": 3},
    "echo": {"message": f"hello from {APP_ID}"},
    "get_weather_alert": {"city": "Chicago"},
}


def sidecar_headers() -> dict[str, str]:
    """``dapr-api-token`` for our own sidecar, when the runner gave us one (``$DAPR_API_TOKEN``)."""
    token = os.environ.get("DAPR_API_TOKEN")
    return {"dapr-api-token": token} if token else {}


def _message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(getattr(exc, "message", None) or exc)


def _text(result) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


async def run_once() -> dict:
    statuses: list[int] = []  # HTTP error statuses seen since the last reset

    async def remember_status(response) -> None:
        if response.status_code >= 400:
            statuses.append(response.status_code)

    http = create_mcp_http_client(headers=sidecar_headers())
    http.event_hooks["response"].append(remember_status)
    out: dict = {"agent": APP_ID, "session": "open", "tools": [], "calls": {}}
    try:
        async with http, Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            out["tools"] = [t.name for t in (await client.list_tools()).tools]
            for tool, arguments in CALLS.items():
                statuses.clear()
                try:
                    result = await client.call_tool(tool, arguments)
                except Exception as exc:  # refused by the sidecar: report it, carry on
                    status = statuses[0] if statuses else None
                    out["calls"][tool] = {"ok": False, "status": status, "error": _message(exc)}
                    continue
                if result.is_error:
                    out["calls"][tool] = {"ok": False, "status": None, "error": _text(result)}
                else:
                    out["calls"][tool] = {"ok": True, "result": _text(result)}
    except Exception as exc:  # the session itself was refused (or the server is down)
        status = f"HTTP {statuses[0]}" if statuses else "no HTTP error"
        out["session"] = f"refused ({status}): {_message(exc)}"
        out["tools"], out["calls"] = [], {}
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        print(f"{self.command} {self.path}", flush=True)

    def do_POST(self) -> None:
        if self.path != "/run":
            self._reply(404, {"error": "not found; POST /run"})
            return
        self._reply(200, anyio.run(run_once))

    def _reply(self, status: int, payload: dict) -> None:
        body = (json.dumps(payload, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("APP_PORT", "5101"))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"{APP_ID} listening on 127.0.0.1:{port}; POST /run to try {SERVER_APP_ID}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
