"""What an MCP request body says about itself, for the audit record: method, names, argument keys.

The MCP policy's verdict is where these should come from (it parsed the body already); until the
verdict carries them, this small pure reader derives them from the body the inbound proxy read.
It never fails: a body the policy refused as malformed simply yields nothing. Argument *values*
are never taken — only their keys — so secrets passed to tools stay out of the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Where a request names the item it is about (tools/call and prompts/get by name, resources by URI).
_ITEM_FIELDS = ("name", "uri")
MAX_LISTED = 32  # a hostile batch must not make the record unbounded
MAX_TEXT = 256  # nor a 4 MiB tool name


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"


@dataclass(frozen=True, slots=True)
class McpSummary:
    methods: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    arg_keys: tuple[str, ...] = ()
    traceparent: str | None = None  # params._meta.traceparent of the first message carrying one

    @property
    def method(self) -> str | None:
        return ",".join(self.methods) if self.methods else None

    @property
    def tool(self) -> str | None:
        """The tool a single ``tools/call`` names (metrics and span names want one)."""
        if self.methods == ("tools/call",) and len(self.names) == 1:
            return self.names[0]
        return None


EMPTY = McpSummary()


def summarize(body: bytes | None) -> McpSummary:
    if not body:
        return EMPTY
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return EMPTY
    messages = document if isinstance(document, list) else [document]
    methods: list[str] = []
    names: list[str] = []
    keys: list[str] = []
    traceparent = None
    for message in messages[:MAX_LISTED]:
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            continue
        methods.append(_bounded(message["method"]))
        params = message.get("params")
        if not isinstance(params, dict):
            continue
        for field in _ITEM_FIELDS:
            if isinstance(params.get(field), str):
                names.append(_bounded(params[field]))
                break
        arguments = params.get("arguments")
        if isinstance(arguments, dict):
            keys.extend(_bounded(k) for k in arguments if _bounded(k) not in keys)
        traceparent = traceparent or _meta_traceparent(params)
    return McpSummary(
        tuple(methods), tuple(names[:MAX_LISTED]), tuple(keys[:MAX_LISTED]), traceparent
    )


def _meta_traceparent(params: dict[str, Any]) -> str | None:
    meta = params.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get("traceparent"), str):
        return meta["traceparent"]
    return None
