"""A stream the sidecar itself ends is recorded as cut, never as a complete answer.

A sidecar told to stop drains: it serves what is under way for its grace period, then cancels
what is left. An SSE stream still open then ends mid-answer. Its audit record used to say
allow/200 with the bytes sent and ``cut: null``, exactly what a stream that ended normally
says, because only the sidecar's own errors filled ``cut``. A cancellation, or any exception
(a bug), now fills it too. Two sidecars run in this process on real mTLS listeners, the server
one with a short grace period. Twin: a stream that ended before the drain records no cut.
"""

from __future__ import annotations

import socket

import httpx
import trio

from sidecar.http.server import ServerLimits
from sidecar.runtime import SidecarOptions, run_sidecar
from tests._support.gated_stream import INVOKE_GATED, open_gated_stream, rest_of_gated_stream
from tests._support.in_process import audit_path, last_record, sidecar_options

GRACE = 0.3  # the server sidecar's drain grace period, seconds


async def _stream_then_drain(mesh, finish_first: bool) -> tuple[bytes, bool, dict]:
    app = mesh.procs.app("stream-app")

    def options(app_id: str, app_port: int | None) -> SidecarOptions:
        return sidecar_options(mesh, app_id, app_port, limits=ServerLimits(drain_timeout=GRACE))

    def release() -> None:
        httpx.get(f"http://127.0.0.1:{app.ready['port']}/release", timeout=5)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(run_sidecar, options("server", app.ready["port"]))
        client = await nursery.start(run_sidecar, options("client", None))
        sock = socket.create_connection(client.http_address, timeout=10)
        try:
            await trio.to_thread.run_sync(open_gated_stream, sock, INVOKE_GATED)
            if finish_first:
                await trio.to_thread.run_sync(release)
                data, closed = await trio.to_thread.run_sync(rest_of_gated_stream, sock, 10)
            server.drain()  # the stream is still open unless it finished first
            if not finish_first:
                data, closed = await trio.to_thread.run_sync(rest_of_gated_stream, sock, 10)
            record = await trio.to_thread.run_sync(
                last_record, audit_path(mesh.home, "server"), "sse-gated"
            )
        finally:
            sock.close()
            await trio.to_thread.run_sync(release)
            nursery.cancel_scope.cancel()
    return data, closed, record


async def test_a_stream_the_sidecar_ends_when_it_stops_is_recorded_as_cut(mesh):
    data, closed, record = await _stream_then_drain(mesh, finish_first=False)
    assert closed and b"data: second" not in data, data
    assert (record["decision"], record["status"]) == ("allow", 200), record
    assert record["cut"].startswith("ERR_CANCELLED: the sidecar stopped the exchange"), record


async def test_twin_a_stream_that_ended_before_the_stop_records_no_cut(mesh):
    data, _, record = await _stream_then_drain(mesh, finish_first=True)
    assert b"data: second" in data, data
    assert record["cut"] is None, record
