"""The development OIDC issuer (examples/dev-oidc-issuer), run as a real process.

Its tokens are checked with joserfc against the JWKS it serves — a library that shares no code
with the issuer's pyjwt signing — and once end to end through the sidecar's own ``JwksSource``
(OIDC discovery) and ``check_bearer``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest
import trio
import yaml
from joserfc import jwt
from joserfc.jwk import KeySet

from sidecar.bearer import (
    BearerConfig,
    JwksSnapshot,
    JwksSource,
    check_bearer,
    parse_bearer_component,
)
from tests._support.procs import REPO, ProcessSet

ISSUER_PY = REPO / "examples" / "dev-oidc-issuer" / "issuer.py"
CLIENTS = {
    "clients": {
        "mcp-client": {"secret": "s3cret", "scopes": ["tools:read", "tools:call"]},
        "reader": {"secret": "r3ader", "scopes": ["tools:read"], "audiences": ["weather"]},
    }
}


@pytest.fixture
def procs(tmp_path):
    procs = ProcessSet(tmp_path)
    yield procs
    assert not procs.stop_all()


def start_issuer(procs: ProcessSet, tmp_path, *extra: str) -> str:
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps(CLIENTS))
    argv = [sys.executable, str(ISSUER_PY), "--port", "0", "--clients", str(clients), *extra]
    proc = procs.start("dev-issuer", argv)
    return proc.ready["issuer"]


@pytest.fixture
def issuer(procs, tmp_path) -> str:
    return start_issuer(procs, tmp_path)


def http(method: str, url: str, form: dict | None = None, headers: dict | None = None):
    """(status, headers, JSON body) — error statuses included."""
    data = urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def get_token(issuer: str, **form) -> dict:
    form = {"grant_type": "client_credentials", **form}
    status, headers, body = http("POST", f"{issuer}/token", form)
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    return body


def joserfc_verify(issuer: str, token: str, audience: str = "mcp-server") -> jwt.Token:
    _, _, jwks = http("GET", f"{issuer}/jwks.json")
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        sub={"essential": True},
        exp={"essential": True},
        nbf={"essential": True},
        iat={"essential": True},
    )
    registry.validate(decoded.claims)
    return decoded


def test_discovery_document_names_the_endpoints(issuer):
    assert issuer.startswith("http://127.0.0.1:")
    status, _, doc = http("GET", f"{issuer}/.well-known/openid-configuration")
    assert status == 200
    assert doc["issuer"] == issuer
    assert doc["jwks_uri"] == f"{issuer}/jwks.json"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert set(doc["scopes_supported"]) == {"tools:read", "tools:call"}
    assert http("GET", f"{issuer}/.well-known/oauth-authorization-server")[2] == doc


def test_client_credentials_token_verifies_with_joserfc(issuer):
    answer = get_token(issuer, client_id="mcp-client", client_secret="s3cret", scope="tools:read")
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    assert answer["scope"] == "tools:read"
    token = joserfc_verify(issuer, answer["access_token"])
    claims = token.claims
    assert claims["sub"] == "mcp-client" and claims["aud"] == "mcp-server"
    assert claims["scope"] == "tools:read"
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    assert abs(claims["iat"] - time.time()) < 30
    _, _, jwks = http("GET", f"{issuer}/jwks.json")
    assert token.header["kid"] == jwks["keys"][0]["kid"]


def test_basic_auth_all_scopes_by_default_and_a_resource_audience(issuer):
    basic = base64.b64encode(b"reader:r3ader").decode()
    status, _, answer = http(
        "POST",
        f"{issuer}/token",
        {"grant_type": "client_credentials", "resource": "weather"},
        {"Authorization": f"Basic {basic}"},
    )
    assert status == 200, answer
    claims = joserfc_verify(issuer, answer["access_token"], audience="weather").claims
    assert claims["sub"] == "reader" and claims["scope"] == "tools:read"


def test_rotation_publishes_the_new_kid_and_keeps_the_old_one(issuer):
    before = get_token(issuer, client_id="mcp-client", client_secret="s3cret")["access_token"]
    old_kid = joserfc_verify(issuer, before).header["kid"]
    status, _, rotated = http("POST", f"{issuer}/rotate", {})
    assert status == 200
    assert rotated["kid"] != old_kid and rotated["previous"] == [old_kid]
    _, _, jwks = http("GET", f"{issuer}/jwks.json")
    assert [k["kid"] for k in jwks["keys"]] == [rotated["kid"], old_kid]
    assert all("d" not in k for k in jwks["keys"])  # public halves only
    after = get_token(issuer, client_id="mcp-client", client_secret="s3cret")["access_token"]
    assert joserfc_verify(issuer, after).header["kid"] == rotated["kid"]
    assert joserfc_verify(issuer, before).header["kid"] == old_kid  # still verifies in grace


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_id": "mcp-client", "client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody", "client_secret": "s3cret"}, 401, "invalid_client"),
        ({"client_id": "mcp-client"}, 401, "invalid_client"),
        (
            {"client_id": "mcp-client", "client_secret": "s3cret", "grant_type": "password"},
            400,
            "unsupported_grant_type",
        ),
        (
            {"client_id": "reader", "client_secret": "r3ader", "scope": "tools:call"},
            400,
            "invalid_scope",
        ),
        (
            {"client_id": "reader", "client_secret": "r3ader", "audience": "mcp-server"},
            400,
            "invalid_target",
        ),
    ],
)
def test_token_requests_that_must_be_refused(issuer, form, status, error):
    form = {"grant_type": "client_credentials", **form}
    got, headers, body = http("POST", f"{issuer}/token", form)
    assert (got, body["error"]) == (status, error)
    assert "access_token" not in body
    assert headers["Cache-Control"] == "no-store"


def test_wrong_basic_secret_is_401_with_a_basic_challenge(issuer):
    basic = base64.b64encode(b"mcp-client:wrong").decode()
    status, headers, body = http(
        "POST",
        f"{issuer}/token",
        {"grant_type": "client_credentials"},
        {"Authorization": f"Basic {basic}"},
    )
    assert (status, body["error"]) == (401, "invalid_client")
    assert headers["WWW-Authenticate"].startswith("Basic ")


async def test_the_sidecar_validates_its_tokens_via_discovery(issuer):
    """JwksSource finds the keys by OIDC discovery; check_bearer accepts the token, at wall time."""
    token = get_token(issuer, client_id="mcp-client", client_secret="s3cret")["access_token"]
    config = BearerConfig(name="bearer-auth", issuer=issuer, audience="mcp-server")
    source = JwksSource(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        assert source.jwks_url == f"{issuer}/jwks.json"
        assert isinstance(source.keys(), JwksSnapshot)
        decision, verified = check_bearer(
            {"authorization": f"Bearer {token}"},
            config=config,
            keys=source.keys(),
            now=time.time(),
            resource_metadata_url=None,
            realm="mcp-server",
        )
        nursery.cancel_scope.cancel()
    assert decision.allowed, decision
    assert verified.subject == "mcp-client"
    assert verified.scopes == {"tools:read", "tools:call"}


def test_the_readme_component_is_accepted_by_the_sidecar():
    readme = (ISSUER_PY.parent / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_bearer_component(yaml.safe_load(block))
    assert (config.name, config.issuer, config.audience) == (
        "bearer-auth",
        "http://127.0.0.1:9000",
        "mcp-server",
    )
    assert config.jwks_url is None  # found by discovery
