"""A sidecar still trying to enrol reads the CA bundle file again at each attempt.

A sidecar started with ``--ca-url`` verifies the CA's certificate against ``<home>/ca/bundle.pem``
(or ``--ca-bundle``). If the CA is unreachable, the sidecar retries with back-off; if meanwhile
the CA is rotated (``ca rotate prepare`` then ``activate``), the CA's certificate chains to the
new root, which only the bundle file written by the rotation holds. Retrying with the bundle read
at start would fail for ever, without a word beyond "cannot reach the CA".
"""

from __future__ import annotations

import socket
import sys
import time

import httpx
import pytest

from tests._support.ca_proc import ca_command, running_ca
from tests._support.procs import _read_ready

pytestmark = pytest.mark.e2e

TRUSTMESH = [sys.executable, "-m", "sidecar"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _await_line(proc, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.stderr_path.read_text():
        assert proc.popen.poll() is None, proc.stderr_path.read_text()
        assert time.monotonic() < deadline, f"never logged {text!r}"
        time.sleep(0.05)


def test_a_sidecar_retrying_to_enrol_through_a_rotation_joins_the_rotated_ca(mesh, tmp_path):
    assert ca_command(mesh.home, "init").returncode == 0
    token = ca_command(mesh.home, "token", "--app-id", "web").stdout.strip()
    port = _free_port()
    argv = [*TRUSTMESH, "sidecar", "--app-id", "web", "--home", str(mesh.home),
            "--http-port", "0", "--ca-url", f"https://127.0.0.1:{port}"]  # fmt: skip
    web = mesh.procs.start("sidecar-web", argv, env={"TRUSTMESH_JOIN_TOKEN": token}, ready=False)
    _await_line(web, "cannot reach the CA; retrying")  # it holds the old bundle by now

    assert ca_command(mesh.home, "rotate", "prepare").returncode == 0
    assert ca_command(mesh.home, "rotate", "activate", "--now").returncode == 0
    with running_ca(mesh.home, tmp_path / "ca.log", "--listen", f"127.0.0.1:{port}"):
        web.ready = _read_ready(web, 60.0)  # the back-off is at most 30 s
        status = httpx.get(f"http://{web.ready['admin']}/v1/status").json()
        assert status["spiffe_id"] == "spiffe://public/ns/default/web"
        assert status["trust_bundle"]["authorities"] == 2  # both roots, as the rotation says
