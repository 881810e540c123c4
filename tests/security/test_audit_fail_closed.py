"""A sidecar that cannot record must not serve, when told so: ``--audit-fail-closed``.

The audit file is ``/dev/full`` (every write fails with ENOSPC), so the log is broken from the
first flush. With ``--audit-fail-closed`` the sidecar answers 503 ``ERR_AUDIT_UNAVAILABLE``
itself and the app's own request counter proves nothing reached it; the twin without the flag
keeps serving (fail-open, the default) and reports the broken log on ``/v1/status`` and
``/metrics``, where an alert can see it.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e


@pytest.fixture
def world(tmp_path, mesh_ca):
    mesh = Mesh(tmp_path, mesh_ca)
    app = mesh.procs.app("app")
    flags = ["--audit-log", "/dev/full"]
    sidecars = {
        "closed": mesh.sidecar(
            "closed", app_port=app.ready["port"], extra=[*flags, "--audit-fail-closed"]
        ),
        "open": mesh.sidecar("open", app_port=app.ready["port"], extra=flags),
        "client": mesh.sidecar("client"),
    }
    yield mesh, app, sidecars
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count", timeout=5).json()["count"]


def _call(sidecars, target: str) -> httpx.Response:
    url = f"{sidecars['client'].url()}/v1.0/invoke/{target}/method/echo"
    return httpx.post(url, timeout=10)


def _status(sidecars, name: str) -> dict:
    return httpx.get(f"http://{sidecars[name].ready['admin']}/v1/status", timeout=5).json()


def _wait_unhealthy(sidecars, name: str) -> dict:
    deadline = time.monotonic() + 10
    while (audit := _status(sidecars, name)["audit"])["healthy"]:
        assert time.monotonic() < deadline, audit
        time.sleep(0.02)
    return audit


def test_fail_closed_answers_503_and_nothing_reaches_the_app(world):
    _, app, sidecars = world
    assert _call(sidecars, "closed").status_code == 200  # the failure is not known yet
    audit = _wait_unhealthy(sidecars, "closed")  # the first flush failed
    assert audit["write_errors"] >= 1 and "No space left" in audit["last_error"]
    before = _count(app)
    refused = _call(sidecars, "closed")
    assert refused.status_code == 503, refused.text
    assert refused.json()["errorCode"] == "ERR_AUDIT_UNAVAILABLE"
    assert "audit log cannot record it" in refused.json()["message"]
    assert _count(app) == before  # the app's own counter: the refused request never arrived
    metrics = httpx.get(f"http://{sidecars['closed'].ready['admin']}/metrics").text
    assert "trustmesh_audit_healthy 0.0" in metrics
    assert "trustmesh_audit_write_errors_total" in metrics


def test_twin_fail_open_keeps_serving_and_reports_the_broken_log(world):
    _, app, sidecars = world
    assert _call(sidecars, "open").status_code == 200
    _wait_unhealthy(sidecars, "open")
    before = _count(app)
    assert _call(sidecars, "open").status_code == 200
    assert _count(app) == before + 1
    metrics = httpx.get(f"http://{sidecars['open'].ready['admin']}/metrics").text
    assert "trustmesh_audit_healthy 0.0" in metrics
