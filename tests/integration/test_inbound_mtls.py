"""The inbound port admits only peers with a live certificate from the mesh's CA, and the
sidecar's own identity follows its SVID directory as files change."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
import ssl
import time

import httpx
import pytest

from identity import AppIdentity, client_context, save_svid_dir
from tests._support.pki import issue, make_ca, utcnow

pytestmark = pytest.mark.e2e


def _request_over_tls(address, context) -> bytes:
    """One GET over TLS; returns the raw response, or raises ssl/OS errors."""
    with socket.create_connection(address, timeout=5) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


def _anonymous_context(bundle) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cadata=bundle.to_pem().decode())
    return context


@pytest.fixture
def server(mesh):
    app = mesh.procs.app()
    return app, mesh.sidecar("server", app_port=app.ready["port"])


def test_only_live_mesh_certificates_get_in(mesh, server):
    app, sidecar = server
    address = sidecar.address("inbound")
    # The legitimate caller: a current SVID from the mesh CA.
    good = client_context(issue(mesh.ca, "caller"), mesh.ca.bundle)
    assert _request_over_tls(address, good).startswith(b"HTTP/1.1 200")

    attempts = {
        "no client certificate": _anonymous_context(mesh.ca.bundle),
        "foreign CA": client_context(issue(make_ca("public"), "caller"), mesh.ca.bundle),
        "expired": client_context(
            issue(mesh.ca, "caller", ttl=dt.timedelta(minutes=1),
                  now=utcnow() - dt.timedelta(hours=2)),
            mesh.ca.bundle,
        ),
    }  # fmt: skip
    before = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    for name, context in attempts.items():
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)) as caught:
            response = _request_over_tls(address, context)
            # TLS 1.3 reports a refused client certificate on the first read, if at all.
            if not response:
                raise ConnectionError("closed without an answer")
        assert caught.value is not None, name
    after = httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]
    assert after == before


def test_svid_dir_reload_and_cert_manager_layout(mesh, tmp_path):
    app = mesh.procs.app()
    directory = tmp_path / "cm"
    first = issue(mesh.ca, "server")
    directory.mkdir()
    (directory / "tls.crt").write_bytes(first.chain_pem())
    (directory / "tls.key").write_bytes(first.key_pem())
    (directory / "ca.crt").write_bytes(mesh.ca.bundle.to_pem())
    sidecar = mesh.procs.sidecar(
        "server", mesh.home, svid_dir=directory, app_port=app.ready["port"]
    )
    status_url = f"http://{sidecar.ready['admin']}/v1/status"
    serial = httpx.get(status_url).json()["svid"]["serial"]
    assert serial == f"{first.leaf.serial_number:x}"

    def wait_for(predicate):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = httpx.get(status_url).json()
            if predicate(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"status never matched: {status}")

    # A rotation written the way cert-manager does it: new files swapped in.
    second = issue(mesh.ca, "server")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "tls.key").write_bytes(second.key_pem())
    (staging / "tls.crt").write_bytes(second.chain_pem())
    shutil.copy(directory / "ca.crt", staging / "ca.crt")
    for name in ("tls.key", "tls.crt"):
        (staging / name).replace(directory / name)
    wait_for(lambda s: s["svid"]["serial"] == f"{second.leaf.serial_number:x}")
    caller = client_context(issue(mesh.ca, "caller"), mesh.ca.bundle)
    assert _request_over_tls(sidecar.address("inbound"), caller).startswith(b"HTTP/1.1 200")

    # A certificate for another identity is refused; the current one keeps serving.
    impostor = issue(mesh.ca, "someone-else")
    (directory / "tls.key").write_bytes(impostor.key_pem())
    (directory / "tls.crt").write_bytes(impostor.chain_pem())
    status = wait_for(lambda s: s["svid_error"] is not None)
    assert "spiffe://public/ns/default/someone-else" in status["svid_error"]
    assert status["svid"]["serial"] == f"{second.leaf.serial_number:x}"
    assert _request_over_tls(sidecar.address("inbound"), caller).startswith(b"HTTP/1.1 200")


def test_svid_dir_from_trustmesh_ca_issue(mesh, tmp_path):
    """The files 'trustmesh ca issue' writes are what --svid-dir reads."""
    svid = issue(mesh.ca, "server")
    save_svid_dir(tmp_path / "ours", svid, mesh.ca.bundle)
    sidecar = mesh.procs.sidecar("server", mesh.home, svid_dir=tmp_path / "ours", app_port=1)
    status = httpx.get(f"http://{sidecar.ready['admin']}/v1/status").json()
    assert status["spiffe_id"] == str(AppIdentity("public", "default", "server"))
    assert json.dumps(status)  # serialisable
