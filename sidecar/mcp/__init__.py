"""The pure MCP layer: strict JSON, the method table, the tool policy, request inspection and
response filtering (JSON bodies and SSE streams). No I/O; the inbound sidecar calls in.

Request path: ``inspect_request`` → ``RequestVerdict`` (allow, or a ``Decision`` carrying the
JSON-RPC error to send; plus the list requests to filter). Response path: register
``verdict.pending`` in the session's ``PendingLists``; pass ``application/json`` bodies through
``filter_response_body`` and ``text/event-stream`` bodies through an ``SseFilter``.
"""

from .errors import (
    JsonRejected,
    JsonTooLarge,
    McpError,
    McpRequestRejected,
    PendingOverflow,
    ResponseFilterFailed,
    SseStreamError,
)
from .filtering import (
    failure_body,
    filter_list_result,
    filter_response_body,
    list_backstop,
)
from .headers import HeaderMismatch, decode_header_value
from .inspect import RequestVerdict, effective_version, inspect_request
from .jsonstrict import check_envelope, loads_strict
from .methods import METHODS, MethodSpec, lookup
from .pending import PendingFilter, PendingLists
from .policy import (
    Caller,
    CallerRef,
    Grant,
    MCPServerAccessPolicy,
    Rule,
    as_caller,
    authorize_item,
    caller_has_any_grant,
    caller_label,
    caller_ref,
    grant,
    parse_policy,
    required_scopes,
    revoke,
    revoke_all,
    to_document,
)
from .sse import SseBlock, SseEvent, SseFilter, SseParser, parse_stream, serialize_event

__all__ = [
    "METHODS",
    "Caller",
    "CallerRef",
    "Grant",
    "HeaderMismatch",
    "JsonRejected",
    "JsonTooLarge",
    "MCPServerAccessPolicy",
    "McpError",
    "McpRequestRejected",
    "MethodSpec",
    "PendingFilter",
    "PendingLists",
    "PendingOverflow",
    "RequestVerdict",
    "ResponseFilterFailed",
    "Rule",
    "SseBlock",
    "SseEvent",
    "SseFilter",
    "SseParser",
    "SseStreamError",
    "as_caller",
    "authorize_item",
    "caller_has_any_grant",
    "caller_label",
    "caller_ref",
    "check_envelope",
    "decode_header_value",
    "effective_version",
    "failure_body",
    "filter_list_result",
    "filter_response_body",
    "grant",
    "inspect_request",
    "list_backstop",
    "loads_strict",
    "lookup",
    "parse_policy",
    "parse_stream",
    "required_scopes",
    "revoke",
    "revoke_all",
    "serialize_event",
    "to_document",
]
