"""A binding that moves a peer's App ID while the app's request body arrives ends the stream.

The calling sidecar reads a small request body whole before it sends it (one write), for as
long as the app trickles it. A binding applied meanwhile (``recheck_streams``) found no exchange
to cut: the exchange was listed only once its request had left. The peer, no longer the App it
was dialled as, then streamed its SSE answer to the app for as long as it liked. Now the
exchange is listed from the moment it holds its connection, and the stream never starts (403).

Twin: a binding for another App ID, applied the same way, leaves the stream flowing.
Through real sidecars; the server app's own counter shows the refused request never arrived.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests._support.gated_stream import INVOKE_GATED
from tests.security.test_k8s_identity_map_attacks import World

pytestmark = pytest.mark.e2e

BINDING = """\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {{name: moved}}
spec:
  spiffeID: spiffe://public/ns/default/sa/elsewhere
  appID: {app_id}
"""


@pytest.fixture
def world(tmp_path, mesh_ca):
    world = World(tmp_path, mesh_ca)
    yield world
    killed = world.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _applied(caller, bindings: int) -> bool:
    return f'"bindings": {bindings}, "event": "identity map applied"' in caller.stderr()


def _post_while_binding(world, app_id: str) -> tuple[bytes, int, int]:
    """POST the gated stream through the caller with half its body, apply a binding of
    ``app_id``, send the rest; returns (what the app behind the caller got, the server app's
    request count before, and after)."""
    app = world.procs.app()
    world.sidecar("server", ("ns", "default", "sa", "server"), app_port=app.ready["port"])
    caller = world.sidecar("caller", ("ns", "default", "caller"))
    count = lambda: httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]  # noqa: E731
    before = count()
    with socket.create_connection(caller.address("http"), timeout=15) as sock:
        sock.sendall(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 4\r\n\r\nab" % INVOKE_GATED
        )
        world.apply("binding.yaml", BINDING.format(app_id=app_id))
        deadline = time.monotonic() + 20
        while not _applied(caller, 1):  # the caller sidecar loaded it (and rechecked streams)
            assert time.monotonic() < deadline, caller.stderr()
            time.sleep(0.05)
        sock.sendall(b"cd")
        data = b""
        try:  # (what arrived is counted before the /release that frees the app)
            while (
                b"\r\n\r\n" not in data
                or (data.startswith(b"HTTP/1.1 200 ") and b"data: first" not in data)
                or (not data.startswith(b"HTTP/1.1 200 ") and not data.endswith(b"}"))
            ):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            after = count()
        finally:
            httpx.get(f"http://127.0.0.1:{app.ready['port']}/release")
    return data, before, after


def test_a_stream_from_a_peer_whose_app_id_a_binding_moved_while_the_body_arrived_never_starts(
    world,
):
    data, before, after = _post_while_binding(world, "server")
    assert data.startswith(b"HTTP/1.1 403 ") and b"data: first" not in data, data
    assert after == before  # the server app never saw the request


def test_twin_a_binding_of_another_app_id_leaves_the_stream_flowing(world):
    data, before, after = _post_while_binding(world, "other")
    assert data.startswith(b"HTTP/1.1 200 ") and b"data: first" in data, data
    assert after == before + 1
