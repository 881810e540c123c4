"""The value every inbound check returns.

The inbound pipeline is an ordered list of pure checks (peer identity → ACL → bearer → MCP
policy); the first deny wins and answers the caller itself, so a denial must carry everything
needed to answer: status, extra headers and body. The same value is what the audit log records
and what ``trustmesh mcpserver access test`` prints, so it also names the rule that decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    layer: str  # "acl", "bearer", "mcp", "request", …
    reason: str  # stable machine code, e.g. "ERR_DIRECT_INVOKE", "tool_not_granted"
    message: str  # for humans: names caller, target and what was refused
    status: int = 200  # HTTP status to answer with when denied
    rule: str | None = None  # the rule that decided, e.g. "rules[0] callers=analyst-agent"
    headers: tuple[tuple[str, str], ...] = ()  # extra response headers (WWW-Authenticate…)
    body: bytes | None = None  # response body; None means the Dapr JSON error shape
    content_type: str = "application/json"

    @classmethod
    def allow(cls, layer: str, reason: str, message: str = "", rule: str | None = None) -> Decision:
        return cls(True, layer, reason, message, 200, rule)

    @classmethod
    def deny(
        cls,
        layer: str,
        reason: str,
        message: str,
        status: int = 403,
        *,
        rule: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Decision:
        if not 400 <= status <= 599:
            raise ValueError(f"a denial needs an error status, not {status}")
        return cls(False, layer, reason, message, status, rule, headers, body, content_type)

    def response_body(self) -> bytes:
        """The body to send for a denial: the explicit one, else Dapr's error JSON."""
        if self.body is not None:
            return self.body
        return json.dumps({"errorCode": self.reason, "message": self.message}).encode()
