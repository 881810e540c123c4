"""Talk to an MCP server through a trustmesh outbound sidecar with the official ``mcp`` client.

``python -m tests._support.mcp_probe URL MODE ACTION [ARGS-JSON]`` prints one JSON line:
``{"ok": true, "tools": [...]}``, ``{"ok": true, "result": ...}`` or ``{"ok": false, ...}``.
MODE is ``legacy`` (2025-11-25: initialize, session id, GET stream, DELETE) or ``2026-07-28``
(stateless) or ``auto`` (probes with server/discover, falls back on the server's 400).
"""

from __future__ import annotations

import json
import sys

import anyio
from mcp import Client


async def run(url: str, mode: str, action: str, args: dict) -> dict:
    async with Client(url, mode=mode) as client:
        if action == "list":
            tools = await client.list_tools()
            return {"ok": True, "tools": sorted(t.name for t in tools.tools)}
        if action == "call":
            result = await client.call_tool(args["name"], args.get("arguments", {}))
            text = [c.text for c in result.content if getattr(c, "text", None) is not None]
            return {"ok": True, "is_error": bool(result.is_error), "result": text}
        raise SystemExit(f"unknown action {action}")


def main() -> None:
    url, mode, action = sys.argv[1:4]
    args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    try:
        out = anyio.run(run, url, mode, action, args)
    except BaseException as exc:  # report, do not crash: the test reads the line
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
