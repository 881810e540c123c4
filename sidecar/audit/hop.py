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

from ..tracing import Tracing, trace_id_of
from .mcp_fields import EMPTY, McpSummary, summarize

_CURRENT: ContextVar[Hop | None] = ContextVar("trustmesh_audit_hop", default=None)


class Hop:
    """Opened once per request, so it does only what every request needs: the start time. The
    trace headers are looked up, and the MCP body read, only when a record or a span asks (the
    header list is the request's own, and the hop is closed before its handler returns)."""

    __slots__ = (
        "_body",
        "_headers",
        "_summary",
        "_trace_headers",
        "_verb",
        "direction",
        "span",
        "started",
        "started_ns",
        "tracing",
    )

    def __init__(
        self, direction: str, headers: Iterable[tuple[bytes, bytes]], verb: bytes, tracing: Tracing
    ) -> None:
        self.direction = direction
        self.started = time.perf_counter()
        # A span starts at the hop's wall-clock start; only tracing needs it.
        self.started_ns = time.time_ns() if tracing.enabled else 0
        self._headers = headers
        self._trace_headers: tuple[str | None, str | None] | None = None
        self._verb = verb
        self.tracing = tracing
        self.span: Any = None
        self._body: bytes | None = None
        self._summary: McpSummary | None = None

    @property
    def traceparent(self) -> str | None:
        return self._trace_context()[0]

    @property
    def tracestate(self) -> str | None:
        return self._trace_context()[1]

    def _trace_context(self) -> tuple[str | None, str | None]:
        if self._trace_headers is None:
            traceparent = tracestate = None
            for name, value in self._headers:
                if name == b"traceparent":
                    traceparent = value.decode("latin-1")
                elif name == b"tracestate":
                    tracestate = value.decode("latin-1")
            self._trace_headers = (traceparent, tracestate)
        return self._trace_headers

    def summary(self) -> McpSummary:
        if self._summary is None:
            self._summary = summarize(self._body) if self._body else EMPTY
        return self._summary

    @property
    def verb(self) -> str:
        """The HTTP method as text (decoded when asked: records carry the proxy's own)."""
        return self._verb.decode("ascii", "replace")

    @property
    def mcp_method(self) -> str | None:
        return self.summary().method

    @property
    def tool(self) -> str | None:
        return self.summary().tool

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def trace_id(self) -> str | None:
        if self.span is not None:
            return Tracing.trace_id(self.span)
        found = trace_id_of(self.traceparent)
        if found is None and self._body and _may_carry_traceparent(self._body):
            found = trace_id_of(self.summary().traceparent)
        return found

    def ensure_span(self) -> Any:
        if self.span is None and self.tracing.enabled:
            self.span = self.tracing.start(self)
        return self.span


def _may_carry_traceparent(body: bytes) -> bool:
    """Whether ``params._meta.traceparent`` could be in ``body`` at all. A JSON key spells
    ``traceparent`` either literally or with a backslash escape, so a body with neither is not
    parsed again just to find none (the judge already parsed it for the decision)."""
    return b"traceparent" in body or b"\\" in body


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
