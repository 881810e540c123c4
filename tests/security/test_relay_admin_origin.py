"""#10.9: the admin port, like the outbound port, answers only requests naming this host.

A page on another origin whose DNS name rebinds to 127.0.0.1 reaches loopback ports from the
user's browser, but still sends its own name in ``Host`` (and ``Origin`` on cross-origin
requests). Each refused request below gets 403 JSON naming the header, and none of the admin
data (status, metrics) in the answer; the twins with loopback names get the real answer.
"""

from __future__ import annotations

import json

import pytest

from tests._support.relay_mesh import send_raw

pytestmark = pytest.mark.e2e

REFUSED = [
    ("host", "evil.example"),
    ("host", "evil.example:80"),
    ("host", "127.0.0.1.evil.example"),
    ("host", "localhost.evil.example"),
    ("host", "127.0.0.1:80@evil.example"),
    ("host", "[::1]evil"),
    ("host", "0.0.0.0"),
    ("origin", "http://evil.example"),
    ("origin", "https://127.0.0.1.evil.example"),
    ("origin", "null"),
    ("origin", "file://"),
    ("origin", "http://localhost@evil.example"),
]

ACCEPTED = [
    ("host", "127.0.0.1"),
    ("host", "localhost:1234"),
    ("host", "[::1]:9"),
    ("origin", "http://localhost:3000"),
    ("origin", "https://127.0.0.1"),
]


@pytest.fixture(scope="module")
def admin(tmp_path_factory, mesh_ca):
    from tests.integration.conftest import Mesh

    mesh = Mesh(tmp_path_factory.mktemp("admin"), mesh_ca)
    sidecar = mesh.sidecar("lonely")
    yield sidecar.address("admin")
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _get(address, path: str, header: str, value: str):
    host = "" if header == "host" else "host: 127.0.0.1\r\n"
    raw = f"GET {path} HTTP/1.1\r\n{host}{header}: {value}\r\nconnection: close\r\n\r\n"
    return send_raw(address, raw.encode("latin-1"))


@pytest.mark.parametrize("path", ["/v1/status", "/metrics"])
@pytest.mark.parametrize(("header", "value"), REFUSED)
def test_foreign_host_or_origin_is_refused(admin, path, header, value):
    status, headers, body = _get(admin, path, header, value)
    assert status == 403, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["errorCode"] == "ERR_FORBIDDEN_ORIGIN"
    assert header.capitalize() in error["message"]
    assert b"app_id" not in body and b"trustmesh_" not in body


@pytest.mark.parametrize(("header", "value"), ACCEPTED)
def test_loopback_host_or_origin_is_served(admin, header, value):
    status, _, body = _get(admin, "/v1/status", header, value)
    assert status == 200, body
    assert json.loads(body)["app_id"] == "lonely"
