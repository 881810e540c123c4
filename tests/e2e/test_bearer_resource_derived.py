"""RFC 9728 for an MCP server whose bearer component names no ``resource`` (#14).

The MCP authorization spec has the client use the server's URL as its resource and find the
protected-resource metadata from the 401 challenge. Behind trustmesh that URL is the caller's own
outbound port (``http://127.0.0.1:<port>/v1.0/invoke/<app>/method/mcp``), so the challenge and
the document are derived from the request the caller made: its sidecar states host and
invocation prefix, the server's sidecar answers with ``resource_metadata`` pointing back through
the same invocation path, and serves the document there. Real sidecars, the official SDK server
(logging every request it receives), an issuer served by this module.

* ``mcp-open``: MCP server behind ``bearer-open`` (issuer + audience only); ``client`` may call
  ``echo``.
* ``plain``: a non-MCP echo app behind the same component: nothing to derive a resource from, so
  its sidecar warns at load and its challenges carry no ``resource_metadata``.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack

import httpx
import pytest
import yaml

from tests._support.bearer_documents import bearer_component, bearer_configuration, publish_issuer
from tests._support.jose_mint import claims, rsa_key, sign
from tests._support.mcp_mesh import McpMesh
from tests._support.switchable_issuer import IssuerSite, serve_issuer
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

AUDIENCE = "mesh-api"
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}
CALL = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "derived"}},
    }
).encode()
WARNING = "has no 'resource' and protects an app that is not an MCP server"


def _documents(issuer: str) -> list[dict]:
    return [
        bearer_component("bearer-open", issuer, AUDIENCE),
        bearer_configuration("open-config", "bearer-open"),
    ]


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    root = tmp_path_factory.mktemp("bearer-derived")
    mcp = McpMesh(Mesh(root, mesh_ca))
    key = rsa_key("d1")
    site = IssuerSite()
    with ExitStack() as stack:
        issuer = stack.enter_context(serve_issuer(site))
        stack.callback(lambda: mcp.procs.stop_all())
        publish_issuer(site, issuer, key)
        path = root / "documents.yaml"
        path.write_text(yaml.safe_dump_all(_documents(issuer), sort_keys=False))
        mcp.tm("apply", "-f", str(path))
        for app_id in ("mcp-open", "plain"):
            mcp.tm("appid", "update", app_id, "--app-config", "open-config")
        mcp.tm("mcpserver", "create", "mcp-open")
        mcp.tm("mcpserver", "access", "grant", "mcp-open", "--caller", "client",
               "--allow-tools", "echo")  # fmt: skip
        server, log = mcp.logging_server("mcp-open-app", mode="json", stateless=True)
        sidecars = {"mcp-open": mcp.sidecar("mcp-open", app_port=server.ready["port"])}
        app = mcp.procs.app("plain-app")
        sidecars["plain"] = mcp.sidecar("plain", app_port=app.ready["port"])
        sidecars["client"] = mcp.sidecar("client")
        token = sign(key, claims(issuer, AUDIENCE, "client-app"))
        yield {"issuer": issuer, "sidecars": sidecars, "log": log, "token": token}


def _base(world, app_id: str, host: str = "127.0.0.1") -> str:
    port = world["sidecars"]["client"].ready["http"].rpartition(":")[2]
    return f"http://{host}:{port}/v1.0/invoke/{app_id}/method"


def _post(world, token: str | None, host: str = "127.0.0.1", **extra: str) -> httpx.Response:
    headers = dict(HEADERS, **extra)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{_base(world, 'mcp-open', host)}/mcp", content=CALL, headers=headers)


def _answered(world) -> httpx.Response:
    """The first JWKS fetch runs in the background: until it lands a token gets 503."""
    deadline = time.monotonic() + 15
    while (response := _post(world, world["token"])).status_code == 503:
        assert time.monotonic() < deadline, "the sidecar never fetched its JWKS"
        time.sleep(0.05)
    return response


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_challenge_points_at_metadata_derived_from_the_url_the_caller_used(world, host):
    refused = _post(world, None, host)
    assert refused.status_code == 401
    metadata_url = f"{_base(world, 'mcp-open', host)}/.well-known/oauth-protected-resource/mcp"
    assert refused.headers["www-authenticate"] == (
        f'Bearer realm="mcp-open", resource_metadata="{metadata_url}"'
    )
    document = httpx.get(metadata_url)
    assert document.status_code == 200, document.text
    assert document.json() == {
        "resource": f"{_base(world, 'mcp-open', host)}/mcp",
        "authorization_servers": [world["issuer"]],
        "scopes_supported": [],
        "bearer_methods_supported": ["header"],
    }
    assert not world["log"].received(CALL)


def test_a_caller_app_cannot_steer_the_derived_urls_with_its_own_forwarded_headers(world):
    spoofed = {
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "https",
        "x-forwarded-prefix": "/phish",
    }
    refused = _post(world, None, **spoofed)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert f'resource_metadata="{_base(world, "mcp-open")}/.well-known/' in challenge
    assert "evil" not in challenge and "phish" not in challenge


def test_twin_a_token_is_served_and_the_app_never_sees_the_forwarded_headers(world):
    response = _answered(world)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"][0]["text"] == "derived"
    entries = [e for e in world["log"].entries() if e.get("method") == "POST"]
    assert entries
    stated = {"x-forwarded-host", "x-forwarded-proto", "x-forwarded-prefix"}
    for entry in entries:
        names = {str(h[0]).lower() for h in entry["headers"]}
        assert not names & stated, names  # x-forwarded-for is the sidecar's own, as in Dapr


def test_a_non_mcp_app_without_resource_warns_at_load_and_challenges_without_metadata(world):
    refused = httpx.get(f"{_base(world, 'plain')}/echo")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="plain"'
    plain = world["sidecars"]["plain"]
    deadline = time.monotonic() + 10
    while WARNING not in plain.stderr():
        assert time.monotonic() < deadline, plain.stderr()[-2000:]
        time.sleep(0.05)
    assert WARNING not in world["sidecars"]["mcp-open"].stderr()


def test_the_dapr_app_id_header_form_derives_the_url_without_an_invoke_prefix(world):
    port = world["sidecars"]["client"].ready["http"].rpartition(":")[2]
    addressed = {"dapr-app-id": "mcp-open"}
    refused = httpx.post(
        f"http://127.0.0.1:{port}/mcp", content=CALL, headers=dict(HEADERS, **addressed)
    )
    assert refused.status_code == 401
    metadata_url = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{metadata_url}"' in refused.headers["www-authenticate"]
    document = httpx.get(metadata_url, headers=addressed)
    assert document.status_code == 200, document.text
    assert document.json()["resource"] == f"http://127.0.0.1:{port}/mcp"
