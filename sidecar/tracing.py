"""OpenTelemetry traces: one span per sidecar hop, optional and off by default.

Nothing here imports OpenTelemetry unless tracing is configured by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``;
``OTEL_SDK_DISABLED=true`` wins) and the ``otel`` extra is installed; otherwise every call is a
cheap no-op and ``traceparent`` passes through the sidecar untouched.

When on, each hop is a span named and attributed per the OpenTelemetry MCP conventions
(``{mcp.method.name} {target}``, ``mcp.method.name``, ``gen_ai.tool.name``,
``gen_ai.operation.name=execute_tool`` for ``tools/call``): the outbound sidecar's span is a
CLIENT span, the inbound sidecar's a SERVER span. The parent comes from the request's
``traceparent`` header, or — for MCP, as the conventions ask — from ``params._meta.traceparent``,
with the HTTP context kept as a link. The sidecar then sends its own span as the ``traceparent``
the next hop sees. The span is created when first needed with the hop's real start time, so a
request denied before its body was read still gets one span with the right duration.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import structlog

log = structlog.get_logger("trustmesh.tracing")

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ZERO_TRACE = "0" * 32


def trace_id_of(traceparent: str | None) -> str | None:
    """The W3C trace id a ``traceparent`` value carries, or None when it is not a valid one."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None or match.group(1) == _ZERO_TRACE:
        return None
    return match.group(1)


def _configured(environ: os._Environ | dict) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(exporter or endpoint)


class Tracing:
    """The sidecar's tracer, or nothing. Holds its own provider: no global OpenTelemetry state."""

    def __init__(self, provider: Any = None, service: str = "trustmesh-sidecar") -> None:
        self.provider = provider
        self.enabled = provider is not None
        if self.enabled:
            from opentelemetry.trace import SpanKind
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )

            self._tracer = provider.get_tracer("trustmesh.sidecar")
            self._propagator = TraceContextTextMapPropagator()
            self._kinds = {"inbound": SpanKind.SERVER, "outbound": SpanKind.CLIENT}

    @classmethod
    def from_environment(cls, app_id: str, environ=None) -> Tracing:
        environ = os.environ if environ is None else environ
        if not _configured(environ):
            return cls()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = _otlp_exporter(environ)
        except ImportError as exc:
            log.warning(
                "OTEL_* variables set but tracing is unavailable: install trustmesh[otel]",
                missing=str(exc),
            )
            return cls()
        # Resource.create also reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        resource = Resource.create({"service.name": f"trustmesh-sidecar-{app_id}"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("tracing on", exporter=type(exporter).__name__)
        return cls(provider)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.force_flush(2000)
            self.provider.shutdown()

    # --- per hop ------------------------------------------------------------------------

    def start(self, hop) -> Any:
        """The hop's span, parented per the conventions, starting when the hop started."""
        carrier = {"traceparent": hop.traceparent} if hop.traceparent else {}
        if hop.tracestate:
            carrier["tracestate"] = hop.tracestate
        http_context = self._propagator.extract(carrier)
        parent, links = http_context, ()
        summary = hop.summary()
        if summary.traceparent and trace_id_of(summary.traceparent):
            parent = self._propagator.extract({"traceparent": summary.traceparent})
            if carrier:
                from opentelemetry.trace import Link, get_current_span

                links = (Link(get_current_span(http_context).get_span_context()),)
        return self._tracer.start_span(
            hop.verb,
            context=parent,
            kind=self._kinds[hop.direction],
            start_time=hop.started_ns,
            links=links,
        )

    def inject(self, span: Any) -> dict[str, str]:
        from opentelemetry.trace import set_span_in_context

        carrier: dict[str, str] = {}
        self._propagator.inject(carrier, context=set_span_in_context(span))
        return carrier

    @staticmethod
    def trace_id(span: Any) -> str:
        return format(span.get_span_context().trace_id, "032x")

    def finish(self, span: Any, hop, fields: dict[str, Any]) -> None:
        from opentelemetry.trace import Status, StatusCode

        summary = hop.summary()
        attributes: dict[str, Any] = {
            "http.request.method": hop.verb,
            "network.transport": "tcp",
            "trustmesh.direction": hop.direction,
            "trustmesh.caller": fields.get("caller") or "",
            "trustmesh.callee": fields.get("callee") or "",
            "trustmesh.decision": fields.get("decision") or "",
            "trustmesh.layer": fields.get("layer") or "",
            "trustmesh.reason": fields.get("reason") or "",
        }
        if fields.get("status"):
            attributes["http.response.status_code"] = int(fields["status"])
        name = hop.verb
        if summary.methods:
            method = summary.methods[0] if len(summary.methods) == 1 else summary.method
            attributes["mcp.method.name"] = method
            name = method
            target = summary.names[0] if len(summary.names) == 1 else None
            if method == "tools/call":
                attributes["gen_ai.operation.name"] = "execute_tool"
                if target:
                    attributes["gen_ai.tool.name"] = target
            elif method == "prompts/get" and target:
                attributes["gen_ai.prompt.name"] = target
            elif method.startswith("resources/") and target:
                attributes["mcp.resource.uri"] = target
                target = None  # high cardinality: never in the span name
            if target and method in ("tools/call", "prompts/get"):
                name = f"{method} {target}"
        span.update_name(name)
        span.set_attributes(attributes)
        if fields.get("decision") == "deny":
            attributes_error = fields.get("reason") or "denied"
            span.set_attribute("error.type", attributes_error)
            span.set_status(Status(StatusCode.ERROR, fields.get("message") or attributes_error))
        span.end(end_time=time.time_ns())


def _otlp_exporter(environ) -> Any:
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_* variables
