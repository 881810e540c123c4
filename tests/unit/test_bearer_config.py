"""parse_bearer_component and OIDC discovery: Dapr's field names, our stricter refusals."""

from __future__ import annotations

import copy
import json

import pytest

from sidecar.bearer import (
    ALLOWED_ALGORITHMS,
    BearerConfig,
    BearerConfigInvalid,
    DiscoveryInvalid,
    discovery_url,
    parse_bearer_component,
    parse_discovery_document,
    parse_duration,
)
from sidecar.errors import ResourceInvalid

DAPR_EXAMPLE = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Component",
    "metadata": {"name": "bearer-token", "namespace": "default"},
    "spec": {
        "type": "middleware.http.bearer",
        "version": "v1",
        "metadata": [
            {"name": "issuer", "value": "https://login.example.com/realms/mesh"},
            {"name": "audience", "value": "mcp-server"},
            {"name": "jwksURL", "value": "https://login.example.com/realms/mesh/certs"},
        ],
    },
}


def component(*metadata: dict, **spec_overrides) -> dict:
    doc = copy.deepcopy(DAPR_EXAMPLE)
    if metadata:
        doc["spec"]["metadata"] = list(metadata)
    doc["spec"].update(spec_overrides)
    return doc


def base(*extra: dict) -> dict:
    return component(
        {"name": "issuer", "value": "https://login.example.com/realms/mesh"},
        {"name": "audience", "value": "mcp-server"},
        *extra,
    )


def refused(doc) -> BearerConfigInvalid:
    with pytest.raises(BearerConfigInvalid) as info:
        parse_bearer_component(doc)
    return info.value


def test_dapr_example_parses_with_our_defaults():
    config = parse_bearer_component(DAPR_EXAMPLE)
    assert config == BearerConfig(
        name="bearer-token",
        issuer="https://login.example.com/realms/mesh",
        audience="mcp-server",
        jwks_url="https://login.example.com/realms/mesh/certs",
        leeway=60.0,
        jwks_refresh_interval=600.0,
        algorithms=ALLOWED_ALGORITHMS,
    )


def test_legacy_aliases_and_any_letter_case_are_accepted():
    config = parse_bearer_component(
        component(
            {"name": "ISSUERurl", "value": "https://idp.example"},
            {"name": "clientid", "value": "app"},
            {"name": "JWKSURL", "value": "https://idp.example/keys"},
        )
    )
    assert (config.issuer, config.audience, config.jwks_url) == (
        "https://idp.example",
        "app",
        "https://idp.example/keys",
    )


def test_jwks_url_is_optional_discovery_then():
    assert parse_bearer_component(base()).jwks_url is None


def test_our_optional_fields():
    config = parse_bearer_component(
        base(
            {"name": "leeway", "value": "30s"},
            {"name": "jwksRefreshInterval", "value": "1h"},
            {"name": "algorithms", "value": "ES256, RS256"},
            {"name": "resource", "value": "https://mcp.example.com/mcp"},
            {"name": "resourceMetadataURL", "value": "https://mcp.example.com/prm"},
        )
    )
    assert config.leeway == 30.0
    assert config.jwks_refresh_interval == 3600.0
    assert config.algorithms == ("ES256", "RS256")
    assert config.resource == "https://mcp.example.com/mcp"
    assert config.resource_metadata_url == "https://mcp.example.com/prm"


def test_errors_are_resource_invalid_with_a_location():
    error = refused(base({"name": "leeway", "value": "forever"}))
    assert isinstance(error, ResourceInvalid)
    assert error.location == "spec.metadata[2].value"
    assert error.code == "ERR_BEARER_COMPONENT_INVALID"


@pytest.mark.parametrize(
    ("doc", "location", "words"),
    [
        (base({"name": "issuers", "value": "x"}), "spec.metadata[2].name", "unknown metadata"),
        (base({"name": "issuerURL", "value": "https://b"}), "spec.metadata[2].name", "repeats"),
        (base({"name": "Audience", "value": "b"}), "spec.metadata[2].name", "repeats"),
        (component({"name": "audience", "value": "a"}), "spec.metadata", "issuer"),
        (component({"name": "issuer", "value": "https://a"}), "spec.metadata", "audience"),
        (base({"name": "x", "secretKeyRef": {}}), "spec.metadata[2].secretKeyRef", "secret"),
        (base({"name": "leeway", "value": 60}), "spec.metadata[2].value", "string"),
        (base({"name": "leeway", "value": "60"}), "spec.metadata[2].value", "duration"),
        (base({"name": "leeway", "value": "10m"}), "spec.metadata[2].value", "at most"),
        (base({"name": "jwksRefreshInterval", "value": "5s"}), "spec.metadata[2].value", "60s"),
        (base({"name": "algorithms", "value": "RS256 HS256"}), "spec.metadata[2].value", "HS256"),
        (base({"name": "algorithms", "value": "none"}), "spec.metadata[2].value", "'none'"),
        (base({"name": "algorithms", "value": "rs256"}), "spec.metadata[2].value", "rs256"),
        (base({"name": "algorithms", "value": " , "}), "spec.metadata[2].value", "at least"),
    ],
)
def test_metadata_refusals(doc, location, words):
    error = refused(doc)
    assert error.location == location
    assert words in error.reason


@pytest.mark.parametrize(
    ("mutate", "location"),
    [
        (lambda d: d.update(apiVersion="dapr.io/v1"), "apiVersion"),
        (lambda d: d.update(kind="Configuration"), "kind"),
        (lambda d: d["spec"].update(type="middleware.http.oauth2"), "spec.type"),
        (lambda d: d["spec"].update(version="v2"), "spec.version"),
        (lambda d: d["spec"].update(ignoreErrors=True), "spec.ignoreErrors"),
        (lambda d: d["spec"].update(metadata={"issuer": "x"}), "spec.metadata"),
        (lambda d: d["metadata"].update(name="Bearer_Token"), "metadata.name"),
        (lambda d: d.update(auth={"secretStore": "vault"}), "auth"),
    ],
)
def test_envelope_refusals(mutate, location):
    doc = copy.deepcopy(DAPR_EXAMPLE)
    mutate(doc)
    assert refused(doc).location == location


def test_component_scopes_are_kept():
    doc = copy.deepcopy(DAPR_EXAMPLE) | {"scopes": ["mcp-server"]}
    assert parse_bearer_component(doc).app_scopes == ("mcp-server",)


def test_missing_version_means_v1_like_dapr():
    doc = copy.deepcopy(DAPR_EXAMPLE)
    del doc["spec"]["version"]
    assert parse_bearer_component(doc).name == "bearer-token"


# -- URLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://idp.example",
        "https://idp.example:8443/realms/a",
        "http://127.0.0.1:8080/realms/dev",
        "http://localhost:8080",
        "http://[::1]:9000/issuer",
    ],
)
def test_https_or_loopback_issuer_accepted(url):
    assert (
        parse_bearer_component(
            component({"name": "issuer", "value": url}, {"name": "audience", "value": "a"})
        ).issuer
        == url
    )


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://idp.example", "https"),
        ("http://127.0.0.2", "https"),
        ("http://localhost.example.com", "https"),
        ("ftp://idp.example", "https"),
        ("idp.example", "https"),
        ("https://", "host"),
        ("https://user:pw@idp.example", "user information"),
        ("https://idp.example/#frag", "fragment"),
        ("https://idp.example/?tenant=a", "query"),
        ("https://idp.example/ realm", "visible ASCII"),
        ("https://idp.example:99999", "port"),
    ],
)
def test_unsafe_issuer_refused(url, words):
    error = refused(component({"name": "issuer", "value": url}, {"name": "audience", "value": "a"}))
    assert error.location == "spec.metadata[0].value"
    assert words in error.reason


def test_plain_http_jwks_url_refused():
    error = refused(base({"name": "jwksURL", "value": "http://idp.example/keys"}))
    assert error.location == "spec.metadata[2].value"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("60s", 60.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5m", 90.0)],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "60", "-5s", "5 s", "1d", "s", "1m30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_config_itself_refuses_algorithms_outside_the_allow_list():
    with pytest.raises(ValueError):
        BearerConfig(name="b", issuer="https://i", audience="a", algorithms=("HS256",))
    with pytest.raises(ValueError):
        BearerConfig(name="b", issuer="https://i", audience="a", algorithms=())


# -- OIDC discovery -------------------------------------------------------------------------------


def test_discovery_url_drops_one_trailing_slash():
    assert (
        discovery_url("https://idp.example/realms/a/")
        == "https://idp.example/realms/a/.well-known/openid-configuration"
    )
    assert (
        discovery_url("https://idp.example")
        == "https://idp.example/.well-known/openid-configuration"
    )


def discovery(**fields) -> bytes:
    doc = {"issuer": "https://idp.example/realms/a", "jwks_uri": "https://idp.example/certs"}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def test_discovery_document_gives_jwks_uri():
    uri = parse_discovery_document(discovery(), "https://idp.example/realms/a")
    assert uri == "https://idp.example/certs"


@pytest.mark.parametrize(
    "issuer",
    [
        "https://idp.example/realms/a/",
        "https://IDP.example/realms/a",
        "https://idp.example/realms/b",
    ],
)
def test_discovery_issuer_must_match_exactly(issuer):
    with pytest.raises(DiscoveryInvalid, match="not exactly"):
        parse_discovery_document(discovery(issuer=issuer), "https://idp.example/realms/a")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (discovery(jwks_uri=None), "no jwks_uri"),
        (discovery(jwks_uri="http://idp.example/certs"), "https"),
        (discovery(jwks_uri=7), "URL"),
        (b"<html>", "not JSON"),
        (b'{"issuer": "https://idp.example/realms/a", "issuer": "https://evil"}', "duplicate"),
    ],
)
def test_unusable_discovery_document_refused(body, words):
    with pytest.raises(DiscoveryInvalid, match=words) as info:
        parse_discovery_document(body, "https://idp.example/realms/a")
    assert "/.well-known/openid-configuration" in str(info.value)
