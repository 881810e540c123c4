"""The logging MCP server (:mod:`tests._support.mcp_logging_server`) serving *both* transports
of the official SDK on one app: Streamable HTTP at ``/mcp`` (JSON, stateless) and the legacy
HTTP+SSE transport at ``/sse`` + ``/messages/?session_id=``, plus a plain ``/status`` route that
is not MCP. Every request is written to ``$MCP_REQUEST_LOG`` before the SDK sees it, so a test
proves a refused request never arrived. Prints ``{"event": "ready", "port": N}``.
"""

from __future__ import annotations

import json
import os
import socket

import anyio
import uvicorn
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests._support.mcp_logging_server import RequestLog, logging_middleware, server


async def status(_request):
    return JSONResponse({"status": "ok"})


def main() -> None:
    app = server.streamable_http_app(json_response=True, stateless_http=True)
    legacy = server.sse_app()
    app.router.routes.extend(legacy.routes)  # /sse and /messages/ beside /mcp
    app.router.routes.append(Route("/status", status))
    wrapped = logging_middleware(app, RequestLog(os.environ["MCP_REQUEST_LOG"]), legacy_only=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    http = uvicorn.Server(uvicorn.Config(wrapped, log_level="warning", lifespan="on"))

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(http.serve, [sock])
            while not http.started:
                await anyio.sleep(0.01)
            print(json.dumps({"event": "ready", "port": sock.getsockname()[1]}), flush=True)

    anyio.run(serve)


if __name__ == "__main__":
    main()
