"""Trace context across the mesh: app → client sidecar → mTLS → server sidecar → app.

Two sidecars run in this process (real listeners, real mTLS on 127.0.0.1) so their spans land in
one in-memory exporter; the app is the echo test app, which shows the ``traceparent`` it got.
One trace, two hops: the client sidecar's CLIENT span under the caller's context, the server
sidecar's SERVER span under it, and the app's parent is the server sidecar's span.
"""

from __future__ import annotations

from functools import partial

import httpx
import trio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sidecar.runtime import SidecarOptions, run_sidecar
from sidecar.tracing import Tracing
from tests._support.in_process import sidecar_options

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


async def test_one_trace_one_span_per_hop_across_two_sidecars(mesh):
    app = mesh.procs.app("trace-app")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def options(app_id: str, app_port: int | None) -> SidecarOptions:
        return sidecar_options(mesh, app_id, app_port, tracing=Tracing(provider))

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_sidecar, options("server", app.ready["port"]))
        client = await nursery.start(run_sidecar, options("client", None))
        host, port = client.http_address
        url = f"http://{host}:{port}/v1.0/invoke/server/method/echo"
        response = await trio.to_thread.run_sync(
            partial(httpx.post, url, headers={"traceparent": CALLER_PARENT}, timeout=10)
        )
        server.drain()
        client.drain()
    assert response.status_code == 200
    seen = {k.lower(): v for k, v in response.json()["headers"]}

    spans = {span.kind: span for span in exporter.get_finished_spans()}
    assert set(spans) == {SpanKind.CLIENT, SpanKind.SERVER}
    outbound, inbound = spans[SpanKind.CLIENT], spans[SpanKind.SERVER]
    assert {format(s.context.trace_id, "032x") for s in (outbound, inbound)} == {CALLER_TRACE}
    assert format(outbound.parent.span_id, "016x") == "00f067aa0ba902b7"
    assert inbound.parent.span_id == outbound.context.span_id
    assert seen["traceparent"] == (
        f"00-{CALLER_TRACE}-{format(inbound.context.span_id, '016x')}-01"
    )
    assert inbound.attributes["trustmesh.callee"] == "spiffe://public/ns/default/server"
    assert inbound.attributes["http.response.status_code"] == 200


def test_a_sidecar_process_imports_neither_opentelemetry_nor_prometheus_client_at_start():
    """Optional and scrape-time dependencies stay out of an idle sidecar's memory."""
    import subprocess
    import sys

    code = (
        "import sys, sidecar.runtime, sidecar.cli_sidecar\n"
        "print(sorted(m for m in ('opentelemetry', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
