"""Errors raised by the MCP layer.

Two directions, as in h11: the *caller* sent something we refuse (``McpRequestRejected``, a 4xx
with a JSON-RPC error code), or the *upstream* answered with something we cannot filter
(``ResponseFilterFailed``, which the sidecar turns into a 502). Both derive from ``PolicyError`` so
the listener's generic handler can answer any of them; each carries the JSON-RPC code to use when
the answer is a JSON-RPC error body.
"""

from __future__ import annotations

from sidecar.errors import PolicyError

from . import jsonrpc


class McpError(PolicyError):
    code = "ERR_MCP"
    http_status = 403
    jsonrpc_code = jsonrpc.INTERNAL_ERROR


class McpRequestRejected(McpError):
    """The caller's message is malformed or ambiguous; it never reaches the app."""

    code = "ERR_MCP_REQUEST_INVALID"
    http_status = 400
    jsonrpc_code = jsonrpc.INVALID_REQUEST


class JsonRejected(McpRequestRejected):
    """The body is not JSON we are willing to read (JSON-RPC "parse error")."""

    code = "ERR_MCP_JSON_INVALID"
    jsonrpc_code = jsonrpc.PARSE_ERROR


class JsonTooLarge(JsonRejected):
    code = "ERR_MCP_BODY_TOO_LARGE"
    http_status = 413


class JsonTooComplex(JsonTooLarge):
    """More JSON values than we parse per body: refused before the parse is paid for."""

    code = "ERR_MCP_JSON_TOO_COMPLEX"


class ResponseFilterFailed(McpError):
    """An upstream response that must be filtered could not be: answer 502, never pass it on."""

    code = "ERR_MCP_RESPONSE_UNFILTERABLE"
    http_status = 502
    jsonrpc_code = jsonrpc.INTERNAL_ERROR


class SseStreamError(ResponseFilterFailed):
    """The upstream event stream broke a limit or cannot be parsed safely."""

    code = "ERR_MCP_SSE_INVALID"


class PendingOverflow(McpError):
    """Too many list responses are awaiting filtering on one session."""

    code = "ERR_MCP_TOO_MANY_PENDING"
    http_status = 503
