"""One span per sidecar hop, named and attributed per the OpenTelemetry MCP conventions.

Driven through the same calls the proxies make (``begin`` → ``note_body`` → ``propagate`` →
``record``) with the SDK's in-memory exporter, so every assertion reads a finished span as a
collector would receive it.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.audit import AuditLog, note_body, propagate
from sidecar.tracing import Tracing, _configured, trace_id_of

HTTP_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
META_TRACE = "0af7651916cd43dd8448eb211c80319c"
HTTP_PARENT = f"00-{HTTP_TRACE}-00f067aa0ba902b7-01"
META_PARENT = f"00-{META_TRACE}-b7ad6b7169203331-01"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def audit(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return AuditLog(None, tracing=Tracing(provider))


def tools_call(name: str, meta: str | None = None) -> bytes:
    params: dict = {"name": name, "arguments": {"a": 1, "b": 2}}
    if meta:
        params["_meta"] = {"traceparent": meta}
    return json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
    ).encode()


def fields(decision: str = "allow", **extra) -> dict:
    return {
        "caller": "spiffe://public/ns/default/client",
        "decision": decision,
        "status": 200,
        **extra,
    }


async def test_inbound_tools_call_span_follows_the_mcp_conventions(audit, exporter):
    hop = audit.begin("inbound", [(b"traceparent", HTTP_PARENT.encode())], b"POST")
    note_body(tools_call("add", META_PARENT))
    forwarded = propagate([(b"traceparent", HTTP_PARENT.encode()), (b"x-other", b"1")])
    audit.record(hop, **fields())
    (span,) = exporter.get_finished_spans()
    assert span.name == "tools/call add"
    assert span.kind == SpanKind.SERVER
    assert span.attributes["mcp.method.name"] == "tools/call"
    assert span.attributes["gen_ai.tool.name"] == "add"
    assert span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert span.attributes["trustmesh.decision"] == "allow"
    # params._meta is the parent (the conventions' choice); the HTTP context is a link.
    assert format(span.context.trace_id, "032x") == META_TRACE
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert [format(link.context.trace_id, "032x") for link in span.links] == [HTTP_TRACE]
    # The app sees this hop's span as its parent, the caller's traceparent replaced.
    sent = dict(forwarded)
    assert b"x-other" in sent
    assert trace_id_of(sent[b"traceparent"].decode()) == META_TRACE
    assert sent[b"traceparent"].decode().split("-")[2] == format(span.context.span_id, "016x")


async def test_a_denied_call_is_an_error_span_and_other_methods_are_not_execute_tool(
    audit, exporter
):
    hop = audit.begin("inbound", [], b"POST")
    note_body(tools_call("get_weather_alert"))
    audit.record(hop, **fields("deny", reason="tool_not_granted", message="no rule grants it"))
    hop = audit.begin("inbound", [], b"POST")
    note_body(b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}')
    audit.record(hop, **fields())
    denied, listing = exporter.get_finished_spans()
    assert denied.status.status_code == StatusCode.ERROR
    assert denied.attributes["error.type"] == "tool_not_granted"
    assert listing.name == "tools/list"
    assert "gen_ai.operation.name" not in listing.attributes


async def test_outbound_hop_is_a_client_span_under_the_callers_context(audit, exporter):
    hop = audit.begin("outbound", [(b"traceparent", HTTP_PARENT.encode())], b"GET")
    forwarded = dict(propagate([(b"traceparent", HTTP_PARENT.encode())]))
    audit.record(hop, **fields())
    (span,) = exporter.get_finished_spans()
    assert (span.kind, span.name) == (SpanKind.CLIENT, "GET")
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert trace_id_of(forwarded[b"traceparent"].decode()) == HTTP_TRACE


async def test_without_tracing_traceparent_passes_untouched_and_the_record_keeps_the_trace_id():
    audit = AuditLog(None)
    headers = [(b"traceparent", HTTP_PARENT.encode())]
    hop = audit.begin("inbound", headers, b"POST")
    assert propagate(headers) is headers
    assert hop.trace_id() == HTTP_TRACE


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
    ],
)
def test_tracing_is_configured_only_by_the_standard_variables(environ, on):
    assert _configured(environ) is on


def test_tracing_off_by_default():
    assert Tracing.from_environment("app", environ={}).enabled is False


@pytest.mark.parametrize(
    ("value", "trace_id"),
    [
        (HTTP_PARENT, HTTP_TRACE),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id is invalid
        ("00-short-00f067aa0ba902b7-01", None),
        (HTTP_PARENT.upper(), None),  # W3C: lower-case hex only
        (None, None),
    ],
)
def test_trace_id_of_accepts_only_valid_w3c_traceparents(value, trace_id):
    assert trace_id_of(value) == trace_id


def test_without_tracing_the_record_takes_the_trace_id_from_params_meta():
    audit = AuditLog(None)
    hop = audit.begin("inbound", [], b"POST")
    note_body(tools_call("add", META_PARENT))
    assert hop.trace_id() == META_TRACE
    hop = audit.begin("inbound", [], b"POST")
    escaped = tools_call("add", META_PARENT).replace(b'"traceparent"', b'"\\u0074raceparent"')
    note_body(escaped)
    assert hop.trace_id() == META_TRACE  # a key spelled with an escape is the same key


def test_a_body_that_cannot_carry_a_traceparent_is_not_parsed_again(monkeypatch):
    from sidecar.audit import hop as hops

    def parsed(body):
        raise AssertionError("the body was parsed again")

    audit = AuditLog(None)
    hop = audit.begin("inbound", [], b"POST")
    note_body(tools_call("add"))
    monkeypatch.setattr(hops, "summarize", parsed)
    assert hop.trace_id() is None
    audit.record(hop, mcp_method="tools/call", decision="allow")
