"""Attacks on the SPIFFE ID → App ID map, each with its legitimate twin, through real sidecars.

The map (``identity/_mapping.py``) lets SPIRE / cert-manager ServiceAccount identities
(``.../ns/<ns>/sa/<sa>``) act as App IDs. Whoever may create pods may pick a ServiceAccount name,
so a binding must never be shadowed by a workload whose ServiceAccount is *named* like the bound
App ID, and the outbound peer check must demand the SPIFFE ID the map derives for the target.
The upstream app's own request counter proves a refused request never arrived.
"""

from __future__ import annotations

import ssl

import httpx
import pytest

from identity import AppIdentity, SpiffeId, save_svid_dir
from tests._support.pki import utcnow
from tests._support.procs import ProcessSet

BINDING = """\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {name: runner}
spec:
  spiffeID: spiffe://public/ns/default/sa/agent-runner
  appID: mcp-client
"""
ALLOW_ONLY_CLIENT = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: only-client}
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - {appId: mcp-client, defaultAction: allow, trustDomain: public, namespace: default}
"""


class World:
    def __init__(self, root, ca) -> None:
        self.root, self.ca = root, ca
        self.home = root / "home"
        self.procs = ProcessSet(root)

    def svid_dir(self, name: str, path: tuple[str, ...]) -> object:
        sid = SpiffeId.from_parts("public", *path)
        directory = self.root / "svids" / name
        identity = AppIdentity("public", "default", path[-1], source=sid)
        save_svid_dir(directory, self.ca.issue(identity, now=utcnow()), self.ca.bundle)
        return directory

    def sidecar(self, app_id: str, svid_path: tuple[str, ...], **kw):
        directory = self.svid_dir(f"{app_id}-{'-'.join(svid_path)}", svid_path)
        return self.procs.sidecar(app_id, self.home, svid_dir=directory, **kw)

    def apply(self, name: str, text: str) -> None:
        from sidecar.cli import main

        (self.root / name).write_text(text)
        main(["apply", "-f", str(self.root / name), "--home", str(self.home)])


@pytest.fixture
def world(tmp_path, mesh_ca):
    world = World(tmp_path, mesh_ca)
    world.apply("binding.yaml", BINDING)
    world.apply("config.yaml", ALLOW_ONLY_CLIENT)
    yield world
    killed = world.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


def _call(sidecar, target: str = "server") -> httpx.Response:
    return httpx.post(f"{sidecar.url()}/v1.0/invoke/{target}/method/echo", content=b"x")


def _direct_mtls_call(svid_dir, inbound: str) -> httpx.Response:
    """What an attacker's own code does with a stolen-or-squatted SVID: no sidecar, raw mTLS."""
    context = ssl.create_default_context(cafile=str(svid_dir / "bundle.pem"))
    context.check_hostname = False
    context.load_cert_chain(svid_dir / "svid.pem", svid_dir / "svid.key")
    with httpx.Client(verify=context) as client:
        return client.post(f"https://{inbound}/echo", content=b"x", headers={"host": "server"})


def test_service_account_named_like_a_bound_app_id_is_not_that_app(world) -> None:
    app = world.procs.app()
    server = world.sidecar(
        "server", ("ns", "default", "sa", "server"), app_port=app.ready["port"],
        extra=["--config", "only-client"],
    )  # fmt: skip
    # Attack: a pod run under a ServiceAccount *named* mcp-client calls the server's mTLS port
    # with its own (valid) SVID. Its default mapping would be App ID mcp-client, which the
    # only-client ACL allows, but mcp-client is bound to another SPIFFE ID.
    squatter = world.svid_dir("squatter", ("ns", "default", "sa", "mcp-client"))
    before = _count(app)
    refused = _direct_mtls_call(squatter, server.ready["inbound"])
    assert refused.status_code == 403, refused.text
    assert "bound to spiffe://public/ns/default/sa/agent-runner" in refused.text
    assert _count(app) == before
    # Twin: the bound ServiceAccount is mcp-client and gets in.
    runner = world.sidecar("mcp-client", ("ns", "default", "sa", "agent-runner"))
    allowed = _call(runner)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["path"] == "/echo"
    assert _count(app) == before + 1


def test_squatter_cannot_even_start_as_the_bound_app(world) -> None:
    """A sidecar told it is mcp-client, holding sa/mcp-client, refuses its own SVID."""
    directory = world.svid_dir("squat", ("ns", "default", "sa", "mcp-client"))
    with pytest.raises(RuntimeError, match="bound to spiffe://public/ns/default/sa/agent-runner"):
        world.procs.sidecar("mcp-client", world.home, svid_dir=directory)


def test_outbound_demands_the_spiffe_id_the_map_derives_for_the_target(world) -> None:
    app = world.procs.app()
    # Attack: a sidecar with a valid ServiceAccount SVID for 'impostor', listed as 'server'.
    impostor = world.sidecar(
        "impostor", ("ns", "default", "sa", "impostor"), app_port=app.ready["port"]
    )
    peers = world.root / "peers.yaml"
    peers.write_text(f"server: {impostor.ready['inbound']}\n")
    before = _count(app)
    fooled = world.sidecar(
        "mcp-client", ("ns", "default", "sa", "agent-runner"), extra=["--peers", str(peers)]
    )
    response = _call(fooled)
    assert response.status_code == 502, response.text
    message = response.json()["message"]
    assert "spiffe://public/ns/default/sa/impostor" in message
    assert "spiffe://public/ns/default/sa/server" in message  # what the map expected
    assert _count(app) == before
    # Twin: the real server under its ServiceAccount identity answers through the same route.
    world.sidecar("server", ("ns", "default", "sa", "server"), app_port=app.ready["port"])
    peers.write_text("")  # let the registry find the real one
    honest = world.sidecar("mcp-client", ("ns", "default", "sa", "agent-runner"))
    assert _call(honest).status_code == 200
    assert _count(app) == before + 1
