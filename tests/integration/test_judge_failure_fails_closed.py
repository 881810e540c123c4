"""A judge that raises refuses the request: answered 500 ``ERR_JUDGE_FAILED``, recorded as a
denial, never forwarded.

The judge is pure code, and a bug in it (an input nobody foresaw) is an exception. It used to
escape the proxy's handler: the connection was dropped with no answer and no audit record (a
body-time failure was even recorded as the head's "allow"), and the calling sidecar reported a
503 of its own. Two sidecars run in this process on real mTLS listeners so each one's judge can
be made to fail; the echo app's own counter shows nothing reached it, and each sidecar's audit
log holds the denial. Twin: the same calls with the judge intact are served.
"""

from __future__ import annotations

import json
from functools import partial

import httpx
import pytest
import trio

from sidecar.runtime import SidecarOptions, run_sidecar
from tests._support.in_process import sidecar_options


def _proxy_of(sidecar, listener: str):
    """The proxy behind one of a running sidecar's listeners ("inbound" or "outbound")."""
    (server,) = [s for s in sidecar.servers if s.name == listener]
    return server.handler.__self__


def _raise(*args, **kwargs):
    raise RuntimeError("a judge bug")


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count", timeout=5).json()["count"]


def _records(mesh, app_id: str) -> list[dict]:
    path = mesh.home / "audit" / f"default.{app_id}.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "decision"]


@pytest.mark.parametrize(
    ("listener", "step", "fails_at"),
    [("inbound", "head", "server"), ("inbound", "body", "server"), ("outbound", "head", "client")],
    ids=["inbound-head", "inbound-body", "outbound-head"],
)
async def test_a_judge_that_raises_refuses_answers_and_records_the_request(
    mesh, listener, step, fails_at
):
    app = mesh.procs.app("judged-app")

    def options(app_id: str, app_port: int | None) -> SidecarOptions:
        return sidecar_options(mesh, app_id, app_port)

    async with trio.open_nursery() as nursery:
        sidecars = {
            "server": await nursery.start(run_sidecar, options("server", app.ready["port"])),
            "client": await nursery.start(run_sidecar, options("client", None)),
        }
        host, port = sidecars["client"].http_address
        post = partial(
            httpx.post,
            f"http://{host}:{port}/v1.0/invoke/server/method/echo",
            content=b'{"small": "body"}',  # read whole and judged again: the body step
            timeout=10,
        )
        served = await trio.to_thread.run_sync(post)  # the twin: the judge intact
        before = await trio.to_thread.run_sync(_count, app)
        judge = _proxy_of(sidecars[fails_at], listener).judge
        setattr(judge, step, _raise)
        refused = await trio.to_thread.run_sync(post)
        after = await trio.to_thread.run_sync(_count, app)
        for sidecar in sidecars.values():
            sidecar.drain()
    assert served.status_code == 200, served.text
    assert refused.status_code == 500, refused.text
    assert refused.json()["errorCode"] == "ERR_JUDGE_FAILED", refused.text
    assert "RuntimeError" in refused.json()["message"]
    assert after == before  # the app never saw the refused request
    record = _records(mesh, fails_at)[-1]
    assert (record["decision"], record["layer"], record["reason"], record["status"]) == (
        "deny",
        "internal",
        "ERR_JUDGE_FAILED",
        500,
    )
