"""What the bearer layer trusts from an issuer (#15): the keys' host, and the token's type.

Through real sidecars (an outbound-only ``client`` calling echo apps over mTLS), with issuers
served by this module on 127.0.0.1:

* **jwks_uri on another port.** ``bearer-foreign``'s issuer publishes a discovery document whose
  ``jwks_uri`` points at another loopback port — where a *valid* JWKS is waiting, as an attacker
  who can answer discovery would arrange. The sidecar refuses the document (its log says why),
  never fetches those keys, and answers 503; the app never sees a request. Twin: ``bearer-same``,
  whose discovery names a ``jwks_uri`` on the issuer's own origin, serves the same token's twin.
* **typ.** ``bearer-same`` sets ``requiredTokenType: at+jwt`` (RFC 9068): a token signed by the
  right key with the right claims but ``typ: JWT`` (what an ID token carries) is refused 401
  ``token_type_invalid``; the ``at+jwt`` twin is served.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

import httpx
import pytest
import yaml

from tests._support.bearer_documents import bearer_component, bearer_configuration, publish_issuer
from tests._support.jose_mint import claims, jwks, rsa_key, sign
from tests._support.mcp_mesh import McpMesh
from tests._support.switchable_issuer import IssuerSite, serve_issuer
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

AUDIENCE = "mesh-api"
ORIGIN_ERROR = "jwks_uri is not on the issuer's origin"


def _component(name: str, issuer: str, **extra: str) -> dict:
    return bearer_component(name, issuer, AUDIENCE, **extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    root = tmp_path_factory.mktemp("bearer-trust")
    mcp = McpMesh(Mesh(root, mesh_ca))
    key = rsa_key("k1")
    attacker, keys_elsewhere, honest = IssuerSite(), IssuerSite(), IssuerSite()
    with ExitStack() as stack:
        foreign_issuer = stack.enter_context(serve_issuer(attacker))
        elsewhere = stack.enter_context(serve_issuer(keys_elsewhere))
        same_issuer = stack.enter_context(serve_issuer(honest))
        stack.callback(lambda: mcp.procs.stop_all())
        keys_elsewhere.put("/jwks.json", jwks(key))
        attacker.put(
            "/.well-known/openid-configuration",
            {"issuer": foreign_issuer, "jwks_uri": f"{elsewhere}/jwks.json"},
        )
        publish_issuer(honest, same_issuer, key)
        documents = [
            _component("bearer-foreign", foreign_issuer),
            _component("bearer-same", same_issuer, requiredTokenType="at+jwt"),
            bearer_configuration("foreign-config", "bearer-foreign"),
            bearer_configuration("same-config", "bearer-same"),
        ]
        path = root / "documents.yaml"
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        mcp.tm("apply", "-f", str(path))
        mcp.tm("appid", "update", "victim", "--app-config", "foreign-config")
        mcp.tm("appid", "update", "guarded", "--app-config", "same-config")
        apps = {name: mcp.procs.app(f"{name}-app") for name in ("victim", "guarded")}
        sidecars = {name: mcp.sidecar(name, app_port=apps[name].ready["port"]) for name in apps}
        sidecars["client"] = mcp.sidecar("client")
        yield {
            "key": key,
            "issuers": {"victim": foreign_issuer, "guarded": same_issuer},
            "elsewhere": keys_elsewhere,
            "apps": apps,
            "sidecars": sidecars,
        }


def token(world, app_id: str, **kw) -> str:
    return sign(world["key"], claims(world["issuers"][app_id], AUDIENCE, "client-app"), **kw)


def get(world, app_id: str, bearer: str) -> httpx.Response:
    url = f"{world['sidecars']['client'].url()}/v1.0/invoke/{app_id}/method/echo"
    return httpx.get(url, headers={"authorization": f"Bearer {bearer}"}, timeout=15)


def count(world, app_id: str) -> int:
    port = world["apps"][app_id].ready["port"]
    return httpx.get(f"http://127.0.0.1:{port}/count", timeout=5).json()["count"]


def served(world, app_id: str, bearer: str) -> httpx.Response:
    """The first JWKS fetch runs in the background: until it lands a token gets 503."""
    deadline = time.monotonic() + 15
    while (response := get(world, app_id, bearer)).status_code == 503:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)
    return response


def test_discovery_pointing_jwks_uri_at_another_loopback_port_is_refused(world):
    sidecar = world["sidecars"]["victim"]
    deadline = time.monotonic() + 15
    while ORIGIN_ERROR not in sidecar.stderr():
        assert time.monotonic() < deadline, sidecar.stderr()[-3000:]
        time.sleep(0.05)
    before = count(world, "victim")
    refused = get(world, "victim", token(world, "victim"))
    assert refused.status_code == 503, refused.text
    assert refused.json()["check"] == "jwks"
    assert "allowForeignJwksHost" in sidecar.stderr()  # the log says how to allow it on purpose
    assert world["elsewhere"].fetches() == 0  # the keys on the other port were never fetched
    assert count(world, "victim") == before


def test_twin_jwks_uri_on_the_issuers_own_origin_is_used(world):
    before = count(world, "guarded")
    response = served(world, "guarded", token(world, "guarded"))
    assert response.status_code == 200, response.text
    assert count(world, "guarded") == before + 1
    assert ORIGIN_ERROR not in world["sidecars"]["guarded"].stderr()


@pytest.mark.parametrize("typ", ["JWT", None, "application/jwt"])
def test_a_token_that_is_not_an_at_jwt_access_token_is_refused(world, typ):
    served(world, "guarded", token(world, "guarded"))  # keys are in
    before = count(world, "guarded")
    refused = get(world, "guarded", token(world, "guarded", typ=typ))
    assert refused.status_code == 401, refused.text
    assert refused.json()["check"] == "token_type_invalid"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert count(world, "guarded") == before


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt"])
def test_twin_an_at_jwt_access_token_is_served(world, typ):
    before = count(world, "guarded")
    response = served(world, "guarded", token(world, "guarded", typ=typ))
    assert response.status_code == 200, response.text
    assert count(world, "guarded") == before + 1
