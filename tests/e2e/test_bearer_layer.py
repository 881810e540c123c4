"""The bearer layer end to end: real sidecars, real apps, tokens minted by joserfc.

Every request leaves an outbound-only caller sidecar (``client``, or ``intruder`` whom the ACL
refuses), crosses mutual TLS, and is judged by the app's sidecar: mTLS → ACL → bearer → MCP
policy. The issuers are thread-served web sites this module controls (discovery + JWKS for the
main one, a bare JWKS URL for the rotating one), so keys can be published, rotated and taken
away mid-test. Tokens come from joserfc, never from pyjwt (which the sidecar verifies with) nor
from trustmesh code, and the forgeries are built the way an attacker's tool builds them.

Each refused token is paired with the accepted one it was derived from, and the app's own
counter (or the MCP server's request log) proves that refused requests never reached it.

Protected apps:

* ``api``: the echo app, ACL ``defaultAction: deny`` allowing only ``client``, bearer component
  ``bearer-main`` (OIDC discovery, ``resource`` set: challenges carry ``resource_metadata``);
* ``mcp-api``: the request-logging MCP server, same configuration, registered as an MCP server;
  ``client`` may call ``echo``, and ``add`` only with scope ``tools:write``;
* ``rotating``: the echo app behind ``bearer-rot`` (``jwksURL``, no ``resource``,
  ``unknownKidRefreshInterval: 2s``) — the key rotation story: a new key is accepted within
  seconds, and a flood of unknown kids costs at most one JWKS fetch per interval;
* ``dark``: the echo app behind ``bearer-dark``, whose ``jwksURL`` nothing listens on.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests._support.bearer_documents import bearer_component, bearer_configuration, publish_issuer
from tests._support.jose_mint import (
    claims,
    hmac_with_public_key,
    jwks,
    rsa_key,
    sign,
    tampered,
    unsigned,
)
from tests._support.jwks_site import closed_port
from tests._support.mcp_mesh import McpMesh
from tests._support.procs import Proc
from tests._support.switchable_issuer import IssuerSite, serve_issuer
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

AUDIENCE = "mesh-api"
RESOURCE = "https://mcp-api.example.test/mcp"
PRM_URL = "https://mcp-api.example.test/.well-known/oauth-protected-resource/mcp"
SCOPE = "tools:write"
MIN_REFRESH_ON_MISS = 2.0  # bearer-rot's unknownKidRefreshInterval (the default is 10 s)
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}

# The fixed error_description of each check (RFC 6750 charset), as the sidecar promises them.
DESCRIPTIONS = {
    "token_expired": "The token has expired",
    "token_not_yet_valid": "The token is not valid yet (nbf)",
    "issuer_mismatch": "The token iss is not the configured issuer",
    "audience_mismatch": "The token aud does not contain the configured audience",
    "algorithm_not_allowed": "The token alg is not in the allowed asymmetric algorithm list",
    "signature_invalid": "The token signature does not verify",
    "kid_missing": "The token header has no kid",
    "kid_unknown": "No key in the issuer JWKS has the token kid",
    "malformed_token": "The access token is not a well-formed JWS compact JWT",
}


# --- the world: issuers, documents, processes --------------------------------------------------


@dataclass
class World:
    mcp: McpMesh
    issuer: str
    rot_issuer: str
    site: IssuerSite
    rot_site: IssuerSite
    keys: dict
    apps: dict[str, Proc]
    sidecars: dict[str, Proc]
    dark_jwks: str
    mcp_log: object

    def token(self, *, key: str = "k1", scope: str | None = None, **overrides) -> str:
        issuer = self.rot_issuer if key.startswith("r") else self.issuer
        payload = claims(issuer, AUDIENCE, "client-app", scope=scope)
        payload.update(overrides)
        return sign(self.keys[key], payload)

    def url(self, app_id: str, path: str = "echo", caller: str = "client") -> str:
        return f"{self.sidecars[caller].url()}/v1.0/invoke/{app_id}/method/{path}"

    def get(self, app_id: str, token: str | None, *, caller: str = "client", path: str = "echo"):
        headers = {} if token is None else {"authorization": f"Bearer {token}"}
        return httpx.get(self.url(app_id, path, caller), headers=headers, timeout=15)

    def count(self, app_id: str) -> int:
        port = self.apps[app_id].ready["port"]
        return httpx.get(f"http://127.0.0.1:{port}/count", timeout=5).json()["count"]


def _component(name: str, issuer: str, **extra: str) -> dict:
    return bearer_component(name, issuer, AUDIENCE, **extra)


# Only ``client`` passes the ACL of the apps it guards.
ONLY_CLIENT = {
    "defaultAction": "deny",
    "trustDomain": "public",
    "policies": [
        {
            "appId": "client",
            "defaultAction": "allow",
            "trustDomain": "public",
            "namespace": "default",
        }
    ],
}


def _configuration(name: str, component: str, *, acl: bool) -> dict:
    if acl:
        return bearer_configuration(name, component, accessControl=ONLY_CLIENT)
    return bearer_configuration(name, component)


def _apply(mcp: McpMesh, root: Path, issuer: str, rot_issuer: str, dark_jwks: str) -> None:
    documents = [
        _component("bearer-main", issuer, resource=RESOURCE),
        _component(
            "bearer-rot",
            rot_issuer,
            jwksURL=f"{rot_issuer}/jwks.json",
            unknownKidRefreshInterval=f"{MIN_REFRESH_ON_MISS:g}s",
        ),
        _component("bearer-dark", issuer, jwksURL=dark_jwks),
        _configuration("protected", "bearer-main", acl=True),
        _configuration("rotating-config", "bearer-rot", acl=False),
        _configuration("dark-config", "bearer-dark", acl=False),
    ]
    path = root / "bearer-documents.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    mcp.tm("apply", "-f", str(path))
    for app_id, config in (
        ("api", "protected"),
        ("mcp-api", "protected"),
        ("rotating", "rotating-config"),
        ("dark", "dark-config"),
    ):
        mcp.tm("appid", "update", app_id, "--app-config", config)
    mcp.tm("mcpserver", "create", "mcp-api")
    mcp.tm("mcpserver", "access", "grant", "mcp-api", "--caller", "client", "--allow-tools", "echo")
    mcp.tm(
        "mcpserver", "access", "grant", "mcp-api", "--caller", "client",
        "--allow-tools", "add", "--required-scopes", SCOPE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    root = tmp_path_factory.mktemp("bearer-e2e")
    mcp = McpMesh(Mesh(root, mesh_ca))
    keys = {kid: rsa_key(kid) for kid in ("k1", "k-stranger", "r1", "r2", "r3")}
    site, rot_site = IssuerSite(), IssuerSite()
    with ExitStack() as stack:
        issuer = stack.enter_context(serve_issuer(site))
        rot_issuer = stack.enter_context(serve_issuer(rot_site))
        # Whatever happens while the world is built, every process started is stopped (before
        # the issuers, which the sidecars would otherwise log as unreachable).
        stack.callback(_stop_all, mcp)
        publish_issuer(site, issuer, keys["k1"], cache_control="public, max-age=300")
        rot_site.put("/jwks.json", jwks(keys["r1"]))
        dark_jwks = f"http://127.0.0.1:{closed_port()}/jwks.json"
        _apply(mcp, root, issuer, rot_issuer, dark_jwks)

        apps: dict[str, Proc] = {}
        sidecars: dict[str, Proc] = {}
        for app_id in ("rotating", "api", "dark"):
            apps[app_id] = mcp.procs.app(f"{app_id}-app")
            sidecars[app_id] = mcp.sidecar(app_id, app_port=apps[app_id].ready["port"])
        server, log = mcp.logging_server("mcp-api-app", mode="json", stateless=True)
        sidecars["mcp-api"] = mcp.sidecar("mcp-api", app_port=server.ready["port"])
        for caller in ("client", "intruder"):
            sidecars[caller] = mcp.sidecar(caller)
        world = World(mcp, issuer, rot_issuer, site, rot_site, keys, apps, sidecars, dark_jwks, log)
        _wait_for_keys(world)
        yield world


def _stop_all(mcp: McpMesh) -> None:
    killed = mcp.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _wait_for_keys(world: World) -> None:
    """Until every bearer sidecar with reachable keys holds them (the first fetch runs in the
    background: a request before it gets 503)."""
    probes = {
        "api": lambda: world.get("api", world.token(), path="count"),
        "rotating": lambda: world.get("rotating", world.token(key="r1"), path="count"),
        "mcp-api": lambda: post_mcp(
            world, jsonrpc_call("warm-up", "echo", {"message": "warm"}), world.token()
        ),
    }
    deadline = time.monotonic() + 15
    for app_id, probe in probes.items():
        while (status := probe().status_code) == 503:
            assert time.monotonic() < deadline, f"{app_id} never fetched its JWKS"
            time.sleep(0.05)
        assert status == 200, (app_id, status)


# --- assertions ------------------------------------------------------------------------------


def challenge(realm: str, *, error: str | None = None, check: str | None = None,
              scope: str | None = None, metadata: str | None = PRM_URL) -> str:  # fmt: skip
    """The exact ``WWW-Authenticate`` value: realm, error, error_description, scope, metadata."""
    params = [f'realm="{realm}"']
    if error is not None:
        params.append(f'error="{error}"')
        params.append(f'error_description="{DESCRIPTIONS[check]}"')
    if scope is not None:
        params.append(f'scope="{scope}"')
    if metadata is not None:
        params.append(f'resource_metadata="{metadata}"')
    return "Bearer " + ", ".join(params)


def assert_invalid_token(response: httpx.Response, check: str, realm: str = "api", **kw) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == challenge(
        realm, error="invalid_token", check=check, **kw
    )
    assert response.json() == {
        "errorCode": "invalid_token",
        "check": check,
        "message": DESCRIPTIONS[check],
    }


def echoed_headers(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    out: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


# --- the accepted token, and what the app is told --------------------------------------------


def test_valid_token_reaches_the_app_as_verified_identity_never_as_authorization(world):
    token = world.token(scope="tools:read tools:write")
    before = world.count("api")
    response = httpx.get(
        world.url("api"),
        headers={
            "authorization": f"Bearer {token}",
            # a caller speaking for the token itself: stripped, whatever the letter case
            "X-Trustmesh-Subject": "admin",
            "x-trustmesh-scopes": "everything",
        },
        timeout=15,
    )
    seen = echoed_headers(response)
    assert "authorization" not in seen
    assert seen["x-trustmesh-subject"] == ["client-app"]
    assert seen["x-trustmesh-scopes"] == ["tools:read tools:write"]
    assert seen["x-trustmesh-issuer"] == [world.issuer]
    assert seen["dapr-caller-app-id"] == ["client"]
    assert token not in response.text
    assert world.count("api") == before + 1


def test_request_without_a_token_gets_the_bare_challenge(world):
    before = world.count("api")
    refused = world.get("api", None)
    assert refused.status_code == 401
    # RFC 6750 §3.1: no credentials, no error attribute; RFC 9728: where the metadata lives.
    assert refused.headers["www-authenticate"] == challenge("api")
    assert refused.json() == {
        "errorCode": "missing_token",
        "check": "authorization_missing",
        "message": "This request needs an Authorization: Bearer token",
    }
    assert world.count("api") == before
    assert world.get("api", world.token()).status_code == 200
    assert world.count("api") == before + 1


# --- every way a token can be wrong, each beside the token it was made from -------------------


def _expired(w):
    return w.token(exp=int(time.time()) - 3600), w.token()


def _not_yet_valid(w):
    return w.token(nbf=int(time.time()) + 3600), w.token(nbf=int(time.time()))


def _wrong_issuer(w):
    # a look-alike: the issuer with a trailing slash (no trimming, no folding)
    return w.token(iss=w.issuer + "/"), w.token(iss=w.issuer)


def _wrong_audience(w):
    return w.token(aud="some-other-api"), w.token(aud=["some-other-api", AUDIENCE])


def _alg_none(w):
    good = w.token()
    payload = claims(w.issuer, AUDIENCE, "client-app")
    return unsigned(payload, kid="k1"), good


def _hs256_keyed_with_the_rsa_public_key(w):
    payload = claims(w.issuer, AUDIENCE, "client-app")
    return hmac_with_public_key(w.keys["k1"], payload), sign(w.keys["k1"], payload)


def _tampered_payload(w):
    good = w.token(scope="tools:read")
    return tampered(good, sub="admin", scope="tools:read tools:write"), good


def _missing_kid(w):
    payload = claims(w.issuer, AUDIENCE, "client-app")
    return sign(w.keys["k1"], payload, kid=None), sign(w.keys["k1"], payload)


def _unknown_kid(w):
    payload = claims(w.issuer, AUDIENCE, "client-app")
    return sign(w.keys["k-stranger"], payload), sign(w.keys["k1"], payload)


def _kid_of_a_real_key_on_a_stranger_signature(w):
    payload = claims(w.issuer, AUDIENCE, "client-app")
    return sign(w.keys["k-stranger"], payload, kid="k1"), sign(w.keys["k1"], payload)


REFUSED = [
    pytest.param(_expired, "token_expired", id="expired"),
    pytest.param(_not_yet_valid, "token_not_yet_valid", id="not-yet-valid"),
    pytest.param(_wrong_issuer, "issuer_mismatch", id="wrong-iss"),
    pytest.param(_wrong_audience, "audience_mismatch", id="wrong-aud"),
    pytest.param(_alg_none, "algorithm_not_allowed", id="alg-none"),
    pytest.param(
        _hs256_keyed_with_the_rsa_public_key, "algorithm_not_allowed", id="hs256-alg-confusion"
    ),
    pytest.param(_tampered_payload, "signature_invalid", id="tampered-payload"),
    pytest.param(_missing_kid, "kid_missing", id="missing-kid"),
    pytest.param(_unknown_kid, "kid_unknown", id="unknown-kid"),
    pytest.param(_kid_of_a_real_key_on_a_stranger_signature, "signature_invalid", id="kid-reuse"),
]


@pytest.mark.parametrize(("make", "check"), REFUSED)
def test_forged_or_stale_token_is_refused_beside_the_accepted_one(world, make, check):
    bad, good = make(world)
    before = world.count("api")
    assert_invalid_token(world.get("api", bad), check)
    assert world.count("api") == before, "a refused request reached the app"
    accepted = world.get("api", good)
    assert echoed_headers(accepted)["x-trustmesh-subject"] == ["client-app"]
    assert world.count("api") == before + 1


def test_authorization_that_is_not_one_bearer_token_is_refused(world):
    good = world.token()
    before = world.count("api")
    for value in (f"Basic {good}", f"Bearer {good}, Bearer {good}", "Bearer not-a-jwt"):
        refused = httpx.get(world.url("api"), headers={"authorization": value}, timeout=15)
        assert refused.status_code == 401, value
        assert refused.json()["errorCode"] == "invalid_token"
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert world.count("api") == before
    assert world.get("api", good).status_code == 200


# --- the ACL comes first ---------------------------------------------------------------------


def test_acl_denied_caller_never_reaches_the_bearer_check(world):
    token = world.token()
    before = world.count("api")
    for sent in (token, None):  # with a valid token, and with none: the ACL answers both
        refused = world.get("api", sent, caller="intruder")
        assert refused.status_code == 403
        assert "www-authenticate" not in refused.headers
        assert refused.json() == {
            "errorCode": "ERR_DIRECT_INVOKE",
            "message": "access control policy has denied access to id: "
            "spiffe://public/ns/default/intruder operation: echo verb: GET",
        }
    metadata = world.get(
        "mcp-api", None, caller="intruder", path=".well-known/oauth-protected-resource"
    )
    assert metadata.status_code == 403 and metadata.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert world.count("api") == before
    assert world.get("api", token).status_code == 200  # the same token, from an allowed caller
    assert world.count("api") == before + 1


# --- RFC 9728 metadata -----------------------------------------------------------------------


def test_protected_resource_metadata_is_served_at_both_well_known_paths(world):
    before = len(world.mcp_log.entries())
    expected = {
        "resource": RESOURCE,
        "authorization_servers": [world.issuer],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
    }
    for path in (
        ".well-known/oauth-protected-resource/mcp",  # path-suffixed: what MCP clients try first
        ".well-known/oauth-protected-resource",
    ):
        response = world.get("mcp-api", None, path=path)  # no token needed to find the AS
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == expected
    # The sidecar answers these itself; the MCP server never sees them.
    assert len(world.mcp_log.entries()) == before
    # Without `resource` (and with a non-URL audience) there is no document to serve.
    assert (
        world.get("rotating", None, path=".well-known/oauth-protected-resource").status_code == 401
    )


# --- scope step-up on an MCP tool ------------------------------------------------------------


def jsonrpc_call(id_: str, name: str, arguments: dict) -> bytes:
    message = {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
               "params": {"name": name, "arguments": arguments}}  # fmt: skip
    return json.dumps(message, separators=(",", ":")).encode()


def post_mcp(world: World, body: bytes, token: str | None) -> httpx.Response:
    headers = {**ACCEPT, "mcp-protocol-version": "2025-06-18"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(world.url("mcp-api", "mcp"), content=body, headers=headers, timeout=15)


def test_scope_step_up_403_insufficient_scope_then_allowed_with_the_scope(world):
    weak = world.token(scope="tools:read")
    strong = world.token(scope=f"tools:read {SCOPE}")
    add = jsonrpc_call("step-1", "add", {"a": 2, "b": 3})

    refused = post_mcp(world, add, weak)
    assert refused.status_code == 403, refused.text
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="mcp-api", error="insufficient_scope", '
        'error_description="The token lacks a scope this request requires", '
        f'scope="{SCOPE}", resource_metadata="{PRM_URL}"'
    )
    assert refused.json() == {
        "errorCode": "insufficient_scope",
        "check": "scope",
        "message": "The token lacks a scope this request requires",
        "requiredScopes": [SCOPE],
        "missingScopes": [SCOPE],
    }
    assert not world.mcp_log.received(add), "the under-scoped call reached the MCP server"

    # The same weak token may call the tool that needs no scope…
    echo = jsonrpc_call("step-2", "echo", {"message": "hi"})
    assert post_mcp(world, echo, weak).json()["result"]["content"][0]["text"] == "hi"
    # …and after stepping up, the refused call runs.
    add_again = jsonrpc_call("step-3", "add", {"a": 2, "b": 3})
    ran = post_mcp(world, add_again, strong)
    assert ran.status_code == 200, ran.text
    assert ran.json()["result"]["content"][0]["text"] == "5"
    assert world.mcp_log.received(add_again)


def test_mcp_endpoint_without_a_token_names_the_scopes_in_its_challenge(world):
    body = jsonrpc_call("anon-1", "echo", {"message": "anon"})
    refused = post_mcp(world, body, None)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == challenge("mcp-api", scope=SCOPE)
    assert not world.mcp_log.received(body)
    forged = post_mcp(world, body, world.token(aud="elsewhere"))
    assert_invalid_token(forged, "audience_mismatch", realm="mcp-api", scope=SCOPE)
    assert not world.mcp_log.received(body)


async def test_official_mcp_client_with_a_bearer_token_sees_the_filtered_list_and_steps_up(world):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def session(token: str, tool: str, arguments: dict):
        headers = {"authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=15) as http,
            Client(streamable_http_client(world.url("mcp-api", "mcp"), http_client=http)) as c,
        ):
            listed = sorted(t.name for t in (await c.list_tools()).tools)
            try:
                result = await c.call_tool(tool, arguments)
            except Exception as exc:  # the SDK raises on a refused call
                return listed, f"{type(exc).__name__}: {exc}"
            return listed, "".join(getattr(x, "text", "") for x in result.content)

    listed, outcome = await session(world.token(scope=SCOPE), "add", {"a": 20, "b": 22})
    assert listed == ["add", "echo"]  # get_weather_alert is not granted: filtered out
    assert outcome == "42"
    listed, outcome = await session(world.token(scope="tools:read"), "add", {"a": 700, "b": 77})
    assert listed == ["add", "echo"]
    # 403 insufficient_scope from the sidecar; the SDK reports the HTTP error generically.
    assert outcome == "MCPError: Server returned an error response"
    assert not [b for b in world.mcp_log.bodies() if b'"a":700' in b.replace(b" ", b"")]


# --- keys: none at all, a stranger's kid, a rotation, an outage -----------------------------


def test_jwks_unreachable_and_nothing_cached_is_503_naming_the_jwks_url(world):
    token = world.token()
    before = world.count("dark")
    refused = world.get("dark", token)
    assert refused.status_code == 503, refused.text
    assert refused.json() == {
        "errorCode": "jwks_unavailable",
        "check": "jwks",
        "message": f"No signing keys are available from {world.dark_jwks}; "
        "the token cannot be checked",
    }
    assert "www-authenticate" not in refused.headers  # re-authenticating would not help
    # No token is still a 401 there (no keys are needed to see that), without resource_metadata.
    missing = world.get("dark", None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == challenge("dark", metadata=None)
    assert world.count("dark") == before
    assert world.get("api", token).status_code == 200  # the same token, where keys are known


def test_unknown_kid_flood_is_refused_without_hammering_the_issuer(world):
    fetches = world.rot_site.fetches()
    before = world.count("rotating")
    started = time.monotonic()
    for n in range(30):
        payload = claims(world.rot_issuer, AUDIENCE, "client-app")
        unknown = sign(world.keys["r2"], payload, kid=f"made-up-{n}")  # a new unknown kid each
        refused = world.get("rotating", unknown)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == challenge(
            "rotating", error="invalid_token", check="kid_unknown", metadata=None
        )
    elapsed = time.monotonic() - started
    # 30 made-up kids buy at most one JWKS GET per unknownKidRefreshInterval, not one each.
    allowed = 1 + int(elapsed / MIN_REFRESH_ON_MISS)
    assert world.rot_site.fetches() - fetches <= allowed < 30
    assert world.count("rotating") == before
    assert world.get("rotating", world.token(key="r1")).status_code == 200


def test_key_rotation_is_picked_up_early_and_cached_keys_outlive_an_issuer_outage(world):
    """Keep this test last: it waits out the sidecar's unknownKidRefreshInterval (2 s here)."""
    site = world.rot_site
    last_fetch = site.last_request_at()
    assert last_fetch is not None
    time.sleep(max(0.0, last_fetch + MIN_REFRESH_ON_MISS + 1.5 - time.time()))

    # The issuer rotates: r2 signs from now on, r1 stays published for its grace period.
    site.put("/jwks.json", jwks(world.keys["r2"], world.keys["r1"]))
    fetches = site.fetches()
    new, old = world.token(key="r2"), world.token(key="r1")
    before = world.count("rotating")
    first = world.get("rotating", new)
    # The request that names the new kid is judged on the keys at hand, and asks for a refresh.
    statuses = [first.status_code]
    deadline = time.monotonic() + 10
    while statuses[-1] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        statuses.append(world.get("rotating", new).status_code)
    assert statuses[-1] == 200, statuses
    assert set(statuses[:-1]) <= {401}, statuses
    if first.status_code == 401:
        assert first.json()["check"] == "kid_unknown"
    assert site.fetches() == fetches + 1, "one early refresh, not the 10-minute schedule"
    assert world.get("rotating", old).status_code == 200  # tokens signed before the rotation
    assert world.count("rotating") == before + 2

    # The issuer goes dark: the cached keys keep serving, for old and new tokens alike.
    site.down = True
    try:
        for token in (new, old, world.token(key="r2", sub="another-client")):
            assert world.get("rotating", token).status_code == 200
        stranger = world.get("rotating", world.token(key="r3"))
        assert stranger.status_code == 401 and stranger.json()["check"] == "kid_unknown"
        assert world.count("rotating") == before + 5
    finally:
        site.down = False
