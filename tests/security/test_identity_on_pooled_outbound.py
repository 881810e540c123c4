"""A calling sidecar keeps its mTLS connections to a peer pooled for reuse; the identity the
handshake proved must still hold each time one is reused.

Attack: the target App ``server`` is a pod under ServiceAccount ``server`` (App ID ``server`` by
default). The calling sidecar has a pooled connection to it. The operator then binds App ID
``server`` to another workload (``sa/real-server``): that pod is no longer ``server``, and a new
handshake with it is refused. The pooled connection must not carry the next call to it either.
Twin: before the binding, the second call reuses the pooled connection (no new handshake) and
is served. The app's own request counter proves the refused call never arrived.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.security.test_k8s_identity_map_attacks import World

pytestmark = pytest.mark.e2e

MOVE_SERVER = """\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {name: real-server}
spec:
  spiffeID: spiffe://public/ns/default/sa/real-server
  appID: server
"""


@pytest.fixture
def world(tmp_path, mesh_ca):
    world = World(tmp_path, mesh_ca)
    yield world
    killed = world.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


def _handshakes(caller) -> int:
    text = httpx.get(f"http://{caller.ready['admin']}/metrics").text
    for line in text.splitlines():
        if line.startswith('trustmesh_tls_handshakes_total{result="ok"}'):
            return int(float(line.split()[-1]))
    return 0


def _call(caller) -> httpx.Response:
    return httpx.post(f"{caller.url()}/v1.0/invoke/server/method/echo", content=b"x")


def test_a_pooled_connection_is_not_reused_once_a_binding_moves_its_peers_app_id(world):
    app = world.procs.app()
    world.sidecar("server", ("ns", "default", "sa", "server"), app_port=app.ready["port"])
    caller = world.sidecar("caller", ("ns", "default", "caller"))

    assert _call(caller).status_code == 200
    assert _call(caller).status_code == 200  # twin: the pooled connection is reused ...
    assert _handshakes(caller) == 1  # ... with no second handshake
    served = _count(app)

    world.apply("binding.yaml", MOVE_SERVER)
    deadline = time.monotonic() + 20
    while True:  # calls made before the caller loads the binding are still legitimate
        assert time.monotonic() < deadline, "the pooled connection kept serving the old peer"
        served = _count(app)
        reply = _call(caller)
        if reply.status_code == 403 and reply.json()["errorCode"] == "ERR_PEER_SVID_EXPIRED":
            continue  # in flight as the binding applied: sent, but its answer never started
        if reply.status_code != 200:
            break
        time.sleep(0.1)
    assert reply.status_code == 502, reply.text
    assert "bound to spiffe://public/ns/default/sa/real-server" in reply.json()["message"]
    assert _handshakes(caller) == 1  # the new handshake was refused, not counted as ok
    assert _count(app) == served  # the call never reached the app
