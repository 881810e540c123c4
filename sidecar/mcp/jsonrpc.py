"""JSON-RPC 2.0 values the MCP layer needs: error codes, request ids, error bodies.

Error codes (JSON-RPC 2.0 §5.1; MCP 2026-07-28 ``schema.ts`` "MCP error codes"): -32700..-32600
are JSON-RPC's own; -32000..-32019 are implementation-defined and the MCP spec promises never to
allocate them; -32020..-32099 belong to the MCP spec (-32020 ``HeaderMismatch``).

We answer a policy denial with **-32003** (in the implementation-defined range, and the code
ContextForge already uses for "Access denied"), not agentgateway's -32602 "Unknown tool": we
prefer an honest 403 over pretending the tool does not exist, as the design and the spec's
authorization section (403 = insufficient permissions) ask.
"""

from __future__ import annotations

import json
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
ACCESS_DENIED = -32003  # trustmesh: the policy refused this caller or item
HEADER_MISMATCH = -32020  # MCP 2026-07-28 HeaderMismatchError

RequestId = str | int


def is_request_id(value: object) -> bool:
    """MCP ``RequestId`` is string | number. We take integers only (no bool, no float).

    Floats are refused so that ``7`` and ``7.0`` can never name the same pending request.
    """
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def id_key(value: object) -> tuple[str, RequestId] | None:
    """A dictionary key for a request id that keeps ``7`` and ``"7"`` apart."""
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, int) and not isinstance(value, bool):
        return ("n", value)
    return None


def dumps(value: Any) -> bytes:
    """Compact, deterministic serialisation for bodies we write or rewrite."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def error_object(request_id: RequestId | None, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def error_body(request_id: RequestId | None, code: int, message: str) -> bytes:
    return dumps(error_object(request_id, code, message))
