"""One agent app, started as analyst-agent, ops-agent and admin-agent: what may this App ID reach?

``POST /run`` tries one tool on each of the four database MCP servers, with the official ``mcp``
client, through this app's own sidecar
(``http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/<server>/method/mcp``), and answers which
succeeded, which were refused by the server's App-ID ACL (HTTP 403 from its sidecar: the request
never reached the server) and which failed otherwise (a tool error from the server itself)::

    {"agent": "analyst-agent",
     "succeeded": ["mcp-db-schema", "mcp-db-query"],
     "refused": ["mcp-db-write", "mcp-db-ddl"],
     "failed": [],
     "results": {"mcp-db-schema": {"tool": "describe_table", "ok": true, "result": "…"}, …}}

A JSON body ``{"sql": "…"}`` replaces the SELECT sent to ``mcp-db-query``. The code is the same
for every agent: only the App ID its sidecar proves differs.
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
DEFAULT_SQL = "SELECT count(*) AS items FROM items"


def sidecar_headers() -> dict[str, str]:
    """``dapr-api-token`` for our own sidecar, when the runner gave us one (``$DAPR_API_TOKEN``)."""
    token = os.environ.get("DAPR_API_TOKEN")
    return {"dapr-api-token": token} if token else {}


def probes(sql: str) -> dict[str, tuple[str, dict]]:
    """Server App ID → (tool, arguments): one harmless, repeatable call per server."""
    return {
        "mcp-db-schema": ("describe_table", {"table": "items"}),
        "mcp-db-query": ("query", {"sql": sql}),
        "mcp-db-write": ("set_quantity", {"name": "widgets", "quantity": 12}),
        "mcp-db-ddl": ("create_table", {"table": "scratch", "columns": ["note TEXT"]}),
    }


def _message(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(getattr(exc, "message", None) or exc)


async def call_one(server: str, tool: str, arguments: dict) -> dict:
    errors: list[tuple[int, object]] = []  # the HTTP errors answered, with their bodies

    async def remember_error(response) -> None:
        if response.status_code >= 400:
            await response.aread()
            try:
                body = response.json()  # the sidecar's {"errorCode": …, "message": …}
            except ValueError:
                body = response.text.strip()
            errors.append((response.status_code, body))

    http = create_mcp_http_client(headers=sidecar_headers())
    http.event_hooks["response"].append(remember_error)
    url = f"{SIDECAR}/v1.0/invoke/{server}/method/mcp"
    try:
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            result = await client.call_tool(tool, arguments)
    except Exception as exc:
        if errors:
            status, body = errors[0]
            return {"tool": tool, "ok": False, "status": status, "error": body or _message(exc)}
        return {"tool": tool, "ok": False, "status": None, "error": _message(exc)}
    text = "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        return {"tool": tool, "ok": False, "status": None, "error": text}
    return {"tool": tool, "ok": True, "result": text}


async def run_once(sql: str) -> dict:
    results = {}
    for server, (tool, arguments) in probes(sql).items():
        results[server] = await call_one(server, tool, arguments)
    return {
        "agent": APP_ID,
        "succeeded": [s for s, r in results.items() if r["ok"]],
        "refused": [s for s, r in results.items() if r.get("status") == 403],
        "failed": [s for s, r in results.items() if not r["ok"] and r.get("status") != 403],
        "results": results,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        print(f"{self.command} {self.path}", flush=True)

    def do_POST(self) -> None:
        if self.path != "/run":
            self._reply(404, {"error": "not found; POST /run"})
            return
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            sql = str(body.get("sql") or DEFAULT_SQL)
        except (ValueError, AttributeError):
            self._reply(400, {"error": 'the body must be JSON like {"sql": "SELECT ..."}'})
            return
        self._reply(200, anyio.run(run_once, sql))

    def _reply(self, status: int, payload: dict) -> None:
        body = (json.dumps(payload, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("APP_PORT", "5201"))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"{APP_ID} listening on 127.0.0.1:{port}; POST /run", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
