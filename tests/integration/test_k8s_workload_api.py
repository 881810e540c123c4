"""``--identity spire``: SVIDs from a Workload API server the test runs on a Unix socket.

In process, the source is driven context by context (first SVID, rotation, a foreign SVID
refused, a stream broken and re-established). Through real processes, a sidecar started with
``SPIFFE_ENDPOINT_SOCKET`` serves mTLS callers with the SVID the server streams, and keeps
serving across a rotation with the new certificate.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time

import httpx
import pytest
import trio
from cryptography import x509

from identity import AppIdentity, SpiffeId
from sidecar.identity_source import IdentityHolder, IdentityUnavailable
from sidecar.identity_spire import run_workload_api_identity
from tests._support.k8s_workload_api import FakeWorkloadApi
from tests._support.pki import utcnow

ME = SpiffeId.parse("spiffe://public/ns/default/sa/server")


def _svid(ca, spiffe_id: SpiffeId = ME, ttl=dt.timedelta(hours=1)):
    identity = AppIdentity(
        "public", spiffe_id.segments[1], spiffe_id.segments[-1], source=spiffe_id
    )
    return ca.issue(identity, now=utcnow(), ttl=ttl)


@pytest.fixture
def workload_api(tmp_path):
    server = FakeWorkloadApi(tmp_path / "agent.sock").start()
    yield server
    server.stop()


async def _wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_installs_the_streamed_svid_and_follows_rotations(workload_api, mesh_ca) -> None:
    holder = IdentityHolder(AppIdentity("public", "default", "server"))
    first = _svid(mesh_ca)
    other = _svid(mesh_ca, SpiffeId.parse("spiffe://public/ns/default/sa/other"))
    workload_api.publish([other, first], mesh_ca.bundle)  # ours is not the default SVID
    async with trio.open_nursery() as nursery:
        await nursery.start(run_workload_api_identity, holder, workload_api.endpoint)
        assert holder.material().svid.leaf == first.leaf
        assert str(holder.material().svid.identity) == str(ME)

        rotated = _svid(mesh_ca)
        await trio.to_thread.run_sync(workload_api.publish, [rotated], mesh_ca.bundle)
        await _wait_for(lambda: holder.generation == 2, "the rotation")
        assert holder.material().svid.leaf == rotated.leaf and holder.renewals == 1

        # Attack: the agent (misconfigured or hijacked) streams someone else's SVID.
        await trio.to_thread.run_sync(workload_api.publish, [other], mesh_ca.bundle)
        await _wait_for(lambda: holder.last_error is not None, "the refusal")
        assert "offered no SVID for spiffe://public/ns/default/server" in holder.last_error
        assert holder.material().svid.leaf == rotated.leaf  # last good one stays

        # The agent restarts: the client reconnects and takes the next context.
        connections = workload_api.connections
        await trio.to_thread.run_sync(workload_api.fail_streams)
        again = _svid(mesh_ca)
        await _wait_for(lambda: workload_api.connections > connections, "a reconnect", 20)
        await trio.to_thread.run_sync(workload_api.publish, [again], mesh_ca.bundle)
        await _wait_for(lambda: holder.material().svid.leaf == again.leaf, "the new SVID", 20)
        nursery.cancel_scope.cancel()


async def test_fails_naming_what_was_offered_when_no_svid_is_this_app(
    workload_api, mesh_ca
) -> None:
    holder = IdentityHolder(AppIdentity("public", "default", "server"))
    workload_api.publish(
        [_svid(mesh_ca, SpiffeId.parse("spiffe://public/ns/default/sa/other"))], mesh_ca.bundle
    )
    with pytest.raises(IdentityUnavailable, match="got spiffe://public/ns/default/sa/other"):
        await run_workload_api_identity(holder, workload_api.endpoint)
    assert holder.current is None


async def test_missing_socket_is_a_clear_error(tmp_path) -> None:
    holder = IdentityHolder(AppIdentity("public", "default", "server"))
    with pytest.raises(IdentityUnavailable, match="does not exist"):
        await run_workload_api_identity(holder, f"unix://{tmp_path}/nope.sock")


def _serial_seen_by_a_caller(inbound: str, caller_dir) -> int:
    context = ssl.create_default_context(cafile=str(caller_dir / "bundle.pem"))
    context.check_hostname = False
    context.load_cert_chain(caller_dir / "svid.pem", caller_dir / "svid.key")
    host, _, port = inbound.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        tls.sendall(b"GET /echo HTTP/1.1\r\nhost: server\r\nconnection: close\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    return x509.load_der_x509_certificate(der).serial_number


def test_a_sidecar_process_serves_with_the_workload_api_svid(mesh, workload_api) -> None:
    first = _svid(mesh.ca)
    workload_api.publish([first], mesh.ca.bundle)
    app = mesh.procs.app()
    server = mesh.procs.sidecar(
        "server",
        mesh.home,
        app_port=app.ready["port"],
        extra=["--identity", "spire"],
        env={"SPIFFE_ENDPOINT_SOCKET": workload_api.endpoint},
    )
    caller = mesh.svid_dir("caller")
    assert _serial_seen_by_a_caller(server.ready["inbound"], caller) == first.leaf.serial_number
    rotated = _svid(mesh.ca)
    workload_api.publish([rotated], mesh.ca.bundle)
    deadline = time.monotonic() + 10
    status = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"http://{server.ready['admin']}/v1/status").json()
        if status["svid"]["generation"] == 2:
            break
        time.sleep(0.05)
    assert status["svid"]["serial"] == f"{rotated.leaf.serial_number:x}", status
    assert _serial_seen_by_a_caller(server.ready["inbound"], caller) == rotated.leaf.serial_number


async def test_without_py_spiffe_the_error_names_the_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "spiffe", None)  # what an install without the extra sees
    holder = IdentityHolder(AppIdentity("public", "default", "server"))
    with pytest.raises(IdentityUnavailable, match=r"pip install 'trustmesh\[spire\]'"):
        await run_workload_api_identity(holder, "unix:///x.sock")
