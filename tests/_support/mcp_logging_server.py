"""A test-only MCP server that writes down every request that reaches it.

The quickstart's tools (``add``, ``get_weather_alert``, ``echo``) plus ``fail`` (raises inside the
server), built with the official SDK's ``MCPServer`` and wrapped in a small ASGI middleware that
appends each raw request (HTTP method, headers, body) as one JSON line to the file named by
``$MCP_REQUEST_LOG``, *before* the SDK sees it. A test that sent a body the sidecar must refuse
then proves the refusal with the server's own record: the body is not in the file.

``MCP_RESPONSE_MODE=json|sse`` and ``MCP_STATELESS=1`` as in the example server.
``MCP_EVENT_STORE=1`` turns on the SDK's resumability with an in-memory event store (2025-11-25
streams then open with a priming event: an id and empty data).

``MCP_LEGACY_ONLY=1`` makes it answer any request for protocol 2026-07-28 the way an mcp 1.x server
does (400 with a JSON-RPC error), so the ``auto`` client's ``server/discover`` probe sees a server
that does not speak 2026-07-28.

It binds 127.0.0.1 port 0 and prints ``{"event": "ready", "port": N}`` once it is listening.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import EventMessage, EventStore

LEGACY_REFUSAL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": "server-error",
        "error": {
            "code": -32600,
            "message": "Bad Request: Unsupported protocol version: 2026-07-28",
        },
    }
).encode()

server = MCPServer("mcp-logging-server")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers together."""
    return a + b


@server.tool()
def get_weather_alert(city: str) -> str:
    """Get a weather alert for a given city."""
    return f"ALERT for {city}: the denied tool ran"


@server.tool()
def echo(message: str) -> str:
    """Echo back a message."""
    return message


@server.tool()
def fail(reason: str) -> str:
    """Raise inside the server."""
    raise ValueError(f"fail tool raised: {reason}")


class MemoryEventStore(EventStore):
    """Events per stream, ids ``<stream>:<n>``; replay sends the rest of the id's stream."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id, message):
        event_id = f"{stream_id}:{len(self.events)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id, send_callback):
        ids = [e[0] for e in self.events]
        if last_event_id not in ids:
            return None
        index = ids.index(last_event_id)
        stream_id = self.events[index][1]
        for event_id, stream, message in self.events[index + 1 :]:
            if stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


class RequestLog:
    """Append-only JSON-lines record of raw requests; one writer lock per process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, scope, body: bytes) -> None:
        entry = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body_b64": base64.b64encode(body).decode("ascii"),
        }
        line = json.dumps(entry) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as out:
            out.write(line)
            out.flush()


def logging_middleware(app, log: RequestLog, *, legacy_only: bool):
    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        log.write(scope, body)
        headers = dict(scope["headers"])
        if legacy_only and headers.get(b"mcp-protocol-version") == b"2026-07-28":
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(LEGACY_REFUSAL)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": LEGACY_REFUSAL})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return middleware


def main() -> None:
    json_mode = os.environ.get("MCP_RESPONSE_MODE", "sse") == "json"
    app = server.streamable_http_app(
        json_response=json_mode,
        stateless_http=os.environ.get("MCP_STATELESS", "0") == "1",
        event_store=MemoryEventStore() if os.environ.get("MCP_EVENT_STORE") == "1" else None,
    )
    wrapped = logging_middleware(
        app,
        RequestLog(os.environ["MCP_REQUEST_LOG"]),
        legacy_only=os.environ.get("MCP_LEGACY_ONLY", "0") == "1",
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(wrapped, log_level="warning", lifespan="on")
    http = uvicorn.Server(config)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(http.serve, [sock])
            while not http.started:
                await anyio.sleep(0.01)
            port = sock.getsockname()[1]
            print(json.dumps({"event": "ready", "port": port, "json": json_mode}), flush=True)

    anyio.run(serve)


if __name__ == "__main__":
    main()
