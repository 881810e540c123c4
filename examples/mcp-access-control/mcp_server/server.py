"""The quickstart's MCP server: tools ``add``, ``get_weather_alert`` and ``echo``.

Written with the official ``mcp`` SDK (``MCPServer``) and nothing trustmesh-specific: it listens on
``127.0.0.1:$APP_PORT`` and reaches the weather service through its own sidecar, by App ID, with
Dapr's service-invocation URL on ``$DAPR_HTTP_PORT``. Every other process on the machine that
wants these tools must come through the sidecar in front of it.

``MCP_RESPONSE_MODE=json`` answers POSTs with ``application/json`` instead of SSE;
``MCP_STATELESS=1`` runs without sessions.
"""

from __future__ import annotations

import json
import os
import sys

import httpx
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


def main() -> None:
    json_mode = os.environ.get("MCP_RESPONSE_MODE", "sse") == "json"
    stateless = os.environ.get("MCP_STATELESS", "0") == "1"
    print(json.dumps({"event": "ready", "port": APP_PORT, "json": json_mode}), flush=True)
    sys.stdout.flush()
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=APP_PORT,
        json_response=json_mode,
        stateless_http=stateless,
    )


if __name__ == "__main__":
    main()
