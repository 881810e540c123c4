"""The quickstart's MCP server: tools ``add``, ``get_weather_alert`` and ``echo``.

Written with the official ``mcp`` SDK (``MCPServer``) and nothing trustmesh-specific: it listens on
``127.0.0.1:$APP_PORT`` and reaches the weather service through its own sidecar, by App ID, with
Dapr's service-invocation URL on ``$DAPR_HTTP_PORT``. Every other process on the machine that
wants these tools must come through the sidecar in front of it.

``MCP_RESPONSE_MODE=json`` answers POSTs with ``application/json`` instead of SSE;
``MCP_STATELESS=1`` runs without sessions.
"""

from __future__ import annotations

import hmac
import json
import os
import sys

import httpx
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

APP_PORT = int(os.environ.get("APP_PORT", "8000"))
SIDECAR = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
WEATHER_APP_ID = os.environ.get("WEATHER_APP_ID", "weather-service")

server = MCPServer("mcp-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers together."""
    return a + b


@server.tool()
async def get_weather_alert(city: str) -> str:
    """Get a weather alert for a given city."""
    url = f"{SIDECAR}/v1.0/invoke/{WEATHER_APP_ID}/method/alerts"
    token = os.environ.get("DAPR_API_TOKEN")  # our own sidecar's local door (trustmesh run)
    headers = {"dapr-api-token": token} if token else {}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        response = await http.get(url, params={"city": city})
    if response.status_code != 200:
        # ToolError's text reaches the client; other exceptions are masked by the SDK.
        raise ToolError(
            f"Error fetching weather alert: {response.status_code} "
            f"{response.reason_phrase}: {response.text}"
        )
    return response.json()["alert"]


@server.tool()
def echo(message: str) -> str:
    """Echo back a message."""
    return message


class RequireAppToken:
    """ASGI middleware: refuse (401) any request that did not come through our sidecar.

    ``trustmesh run`` gives the app ``APP_API_TOKEN`` and its sidecar sends it as
    ``dapr-api-token`` on every request it forwards (as Dapr does); another local process that
    posts to this port directly does not have it. Exactly one header, compared in constant time.
    """

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            sent = [v for k, v in scope["headers"] if k == b"dapr-api-token"]
            if len(sent) != 1 or not hmac.compare_digest(sent[0], self.token):
                body = b'{"error": "this app is reached through its sidecar only"}'
                headers = [(b"content-type", b"application/json")]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": 401, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def serve(server: MCPServer, **options) -> None:
    """``server.run("streamable-http", …)``, behind :class:`RequireAppToken` when
    ``$APP_API_TOKEN`` is set."""
    app = server.streamable_http_app(host="127.0.0.1", **options)
    if token := os.environ.get("APP_API_TOKEN"):
        app.add_middleware(RequireAppToken, token=token)
    uvicorn.run(app, host="127.0.0.1", port=APP_PORT, log_level=server.settings.log_level.lower())


def main() -> None:
    json_mode = os.environ.get("MCP_RESPONSE_MODE", "sse") == "json"
    stateless = os.environ.get("MCP_STATELESS", "0") == "1"
    print(json.dumps({"event": "ready", "port": APP_PORT, "json": json_mode}), flush=True)
    sys.stdout.flush()
    serve(server, json_response=json_mode, stateless_http=stateless)


if __name__ == "__main__":
    main()
