"""#15's bearer points: RFC 9068 ``typ`` as a component option, and discovery's ``jwks_uri`` held
to the issuer's origin unless the component allows otherwise."""

from __future__ import annotations

import json

import pytest

from sidecar.bearer import (
    BearerConfigInvalid,
    DiscoveryInvalid,
    TokenRejected,
    parse_bearer_component,
    parse_discovery_document,
    parse_jwks,
    validate_token,
)
from tests._support.bearer import AUDIENCE, NOW, Issuer, claims, make_config
from tests._support.bearer import ISSUER as ISSUER_OF_CONFIG
from tests._support.jose_mint import jwks, rsa_key, sign

ISSUER = "https://login.example.com/realms/mesh"


def component(*extra: dict) -> dict:
    metadata = [
        {"name": "issuer", "value": ISSUER},
        {"name": "audience", "value": "mcp-server"},
        *extra,
    ]
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bearer"},
        "spec": {"type": "middleware.http.bearer", "version": "v1", "metadata": metadata},
    }


# --- typ ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "normalised"),
    [("at+jwt", "at+jwt"), ("application/at+jwt", "at+jwt"), ("AT+JWT", "at+jwt")],
)
def test_required_token_type_is_read_and_normalised(value, normalised):
    item = {"name": "requiredTokenType", "value": value}
    assert parse_bearer_component(component(item)).required_token_type == normalised


@pytest.mark.parametrize("value", ["at jwt", "application/", "at+jwt;x=1", "é"])
def test_a_required_token_type_that_is_not_a_media_type_is_refused(value):
    with pytest.raises(BearerConfigInvalid, match=r"spec.metadata\[2\].value"):
        parse_bearer_component(component({"name": "requiredtokentype", "value": value}))


def test_typ_is_not_checked_unless_configured():
    assert parse_bearer_component(component()).required_token_type is None


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def keys(issuer):
    return issuer.snapshot(issuer.rsa)


AT_JWT = make_config(required_token_type="at+jwt")


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_twin_an_access_token_typ_is_accepted(issuer, keys, typ):
    token = issuer.mint(header={"typ": typ})
    assert validate_token(token, config=AT_JWT, keys=keys, now=NOW).subject == "alice"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "id_token+jwt", "at+jwt ", "", "application/jwt"])
def test_a_token_of_another_type_is_refused_when_at_jwt_is_required(issuer, keys, typ):
    token = issuer.mint(header={"typ": typ})  # e.g. the issuer's ID token: same key, same iss
    with pytest.raises(TokenRejected) as info:
        validate_token(token, config=AT_JWT, keys=keys, now=NOW)
    assert info.value.reason_code == "token_type_invalid"


def test_a_token_without_typ_is_refused_when_at_jwt_is_required():
    key = rsa_key("no-typ")
    body = json.dumps(jwks(key)).encode()
    keys = parse_jwks(body, source_url="https://login.example.com/jwks", fetched_at=NOW)
    payload = {**claims(), "iss": ISSUER_OF_CONFIG, "aud": AUDIENCE}
    with pytest.raises(TokenRejected) as info:
        validate_token(sign(key, payload, typ=None), config=AT_JWT, keys=keys, now=NOW)
    assert info.value.reason_code == "token_type_invalid"
    assert validate_token(sign(key, payload), config=AT_JWT, keys=keys, now=NOW)  # the twin


def test_without_the_option_a_plain_jwt_typ_still_passes(issuer, keys):
    token = issuer.mint(header={"typ": "JWT"})
    assert validate_token(token, config=make_config(), keys=keys, now=NOW).subject == "alice"


# --- jwks_uri host ------------------------------------------------------------------------------


def discovery(jwks_uri: str, issuer: str = ISSUER) -> bytes:
    return json.dumps({"issuer": issuer, "jwks_uri": jwks_uri}).encode()


@pytest.mark.parametrize(
    "jwks_uri",
    [
        "https://login.example.com/realms/mesh/protocol/openid-connect/certs",
        "https://LOGIN.example.com:443/keys",  # same origin, spelled differently
    ],
)
def test_twin_jwks_uri_on_the_issuer_origin_is_accepted(jwks_uri):
    assert parse_discovery_document(discovery(jwks_uri), ISSUER) == jwks_uri


@pytest.mark.parametrize(
    ("issuer", "jwks_uri"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9001/jwks.json"),  # another loopback port
        ("http://127.0.0.1:9000", "http://localhost:9000/jwks.json"),  # another host name
        (ISSUER, "https://evil.example.com/keys"),
        (ISSUER, "https://login.example.com.evil.example/keys"),
        (ISSUER, "https://login.example.com:8443/keys"),
        ("https://127.0.0.1:9000", "http://127.0.0.1:9000/jwks.json"),  # scheme downgrade
    ],
)
def test_jwks_uri_off_the_issuer_origin_is_refused_naming_the_option(issuer, jwks_uri):
    with pytest.raises(DiscoveryInvalid) as info:
        parse_discovery_document(discovery(jwks_uri, issuer), issuer)
    assert "jwks_uri is not on the issuer's origin" in str(info.value)
    assert "allowForeignJwksHost" in str(info.value)


def test_a_component_may_allow_a_foreign_jwks_host():
    item = {"name": "allowForeignJwksHost", "value": "true"}
    config = parse_bearer_component(component(item))
    assert config.allow_foreign_jwks_host is True
    google = "https://www.googleapis.com/oauth2/v3/certs"
    assert parse_discovery_document(discovery(google), ISSUER, allow_foreign_host=True) == google
    assert parse_bearer_component(component()).allow_foreign_jwks_host is False
    with pytest.raises(BearerConfigInvalid, match="is not 'true' or 'false'"):
        parse_bearer_component(component({"name": "allowForeignJwksHost", "value": "yes"}))
