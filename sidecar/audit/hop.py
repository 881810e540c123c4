"""One request's passage through a sidecar, as the audit log and the tracer see it.

A proxy opens a hop when a request head arrives (``AuditLog.begin``) and closes it with the
decision (``AuditLog.record``). In between, two things happen deep inside the proxy's code, so
they reach the hop through a context variable instead of extra parameters: the inbound proxy
shows it the MCP body it read (:func:`note_body`), and a forwarding proxy asks it for the
``traceparent`` the next hop must see (:func:`propagate`). trio runs each connection in its own
task with its own context, and a connection's requests one after another, so the current hop is
always the request being handled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import trio

from ..tracing import Tracing, trace_id_of
from .mcp_fields import EMPTY, McpSummary, summarize

_CURRENT: ContextVar[Hop | None] = ContextVar("trustmesh_audit_hop", default=None)


class Hop:
    __slots__ = (
        "_body",
        "_summary",
        "direction",
        "span",
        "started",
        "started_ns",
        "traceparent",
        "tracestate",
        "tracing",
        "verb",
    )

    def __init__(
        self, direction: str, headers: Iterable[tuple[bytes, bytes]], verb: bytes, tracing: Tracing
    ) -> None:
        self.direction = direction
        self.started = trio.current_time()
        self.started_ns = time.time_ns()
        self.verb = verb.decode("ascii", "replace")
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        for name, value in headers:
            if name == b"traceparent":
                self.traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                self.tracestate = value.decode("latin-1")
        self.tracing = tracing
        self.span: Any = None
        self._body: bytes | None = None
        self._summary: McpSummary | None = None

    def summary(self) -> McpSummary:
        if self._summary is None:
            self._summary = summarize(self._body) if self._body else EMPTY
        return self._summary

    @property
    def mcp_method(self) -> str | None:
        return self.summary().method

    @property
    def tool(self) -> str | None:
        return self.summary().tool

    def elapsed(self) -> float:
        return trio.current_time() - self.started

    def trace_id(self) -> str | None:
        if self.span is not None:
            return Tracing.trace_id(self.span)
        return trace_id_of(self.traceparent) or trace_id_of(self.summary().traceparent)

    def ensure_span(self) -> Any:
        if self.span is None and self.tracing.enabled:
            self.span = self.tracing.start(self)
        return self.span


def enter(hop: Hop) -> None:
    _CURRENT.set(hop)


def leave() -> None:
    _CURRENT.set(None)


def note_body(body: bytes | None) -> None:
    """The inbound proxy read the whole MCP body: keep it for the record's method/names/keys."""
    hop = _CURRENT.get()
    if hop is not None:
        hop._body, hop._summary = body, None


def propagate(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers to forward, with this hop's span as the ``traceparent`` when tracing is on
    (unchanged otherwise, so the caller's trace context passes through)."""
    hop = _CURRENT.get()
    if hop is None or not hop.tracing.enabled:
        return headers
    carrier = hop.tracing.inject(hop.ensure_span())
    if not carrier:
        return headers
    replaced = {name.encode("latin-1") for name in carrier}
    kept = [(name, value) for name, value in headers if name not in replaced]
    return kept + [(n.encode("latin-1"), v.encode("latin-1")) for n, v in carrier.items()]
