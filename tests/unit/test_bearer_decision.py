"""check_bearer / scope_decision as the inbound pipeline sees them: exact challenges and bodies,
the 503 when no key was ever fetched, step-up, header hygiene and RFC 9728 metadata."""

from __future__ import annotations

import json

import pytest

from sidecar.bearer import (
    REASONS,
    JwksCache,
    KeysUnavailable,
    app_identity_headers,
    bearer_challenge,
    bearer_token,
    check_bearer,
    must_strip,
    protected_resource_metadata,
    protected_resource_metadata_paths,
    protected_resource_metadata_url,
    refresh_may_help,
    resource_metadata_url_for,
    scope_decision,
    strip_client_credentials,
    unverified_kid,
)
from tests._support.bearer import (
    ISSUER,
    JWKS_URL,
    NOW,
    PRM_URL,
    Issuer,
    claims,
    make_config,
    unsigned_token,
)

CONFIG = make_config(jwks_url=JWKS_URL)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def keys(issuer):
    return issuer.snapshot()


def check(headers, keys, *, config=CONFIG, now=NOW, prm=PRM_URL, realm="mcp-server", **kw):
    return check_bearer(
        headers,
        config=config,
        keys=keys,
        now=now,
        resource_metadata_url=prm,
        realm=realm,
        **kw,
    )


def challenge(decision) -> str:
    (name, value), *rest = decision.headers
    assert name == "WWW-Authenticate" and not rest
    return value


# -- 401 ------------------------------------------------------------------------------------------


def test_valid_token_allowed(issuer, keys):
    decision, verified = check({"authorization": f"Bearer {issuer.mint()}"}, keys)
    assert decision.allowed and decision.layer == "bearer" and decision.reason == "token_valid"
    assert verified.subject == "alice"


def test_missing_header_gets_a_challenge_without_error():
    decision, verified = check({}, None)
    assert verified is None
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "missing_token")
    assert challenge(decision) == (
        'Bearer realm="mcp-server", resource_metadata="'
        'https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    assert json.loads(decision.body) == {
        "errorCode": "missing_token",
        "check": "authorization_missing",
        "message": "This request needs an Authorization: Bearer token",
    }


def test_missing_header_with_scope_hint_and_no_metadata_url():
    decision, _ = check({"authorization": "  "}, None, prm=None, scope_hint=["tools:read"])
    assert challenge(decision) == 'Bearer realm="mcp-server", scope="tools:read"'


def test_expired_token_gets_invalid_token_naming_the_check(issuer, keys):
    token = issuer.mint(claims(exp=int(NOW) - 3600))
    decision, verified = check({"authorization": f"Bearer {token}"}, keys)
    assert verified is None
    assert (decision.status, decision.reason, decision.rule) == (
        401,
        "invalid_token",
        "token_expired",
    )
    assert challenge(decision) == (
        'Bearer realm="mcp-server", error="invalid_token", '
        'error_description="The token has expired", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    assert json.loads(decision.body) == {
        "errorCode": "invalid_token",
        "check": "token_expired",
        "message": "The token has expired",
    }
    assert decision.content_type == "application/json"


def test_valid_token_for_the_same_request_shape_allowed(issuer, keys):
    decision, _ = check({"authorization": f"Bearer {issuer.mint(claims())}"}, keys)
    assert decision.allowed


def test_alg_none_refused_with_a_fixed_description(keys):
    decision, _ = check({"authorization": f"Bearer {unsigned_token(claims())}"}, keys)
    assert decision.rule == "algorithm_not_allowed"
    assert challenge(decision) == (
        'Bearer realm="mcp-server", error="invalid_token", error_description="'
        'The token alg is not in the allowed asymmetric algorithm list", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )


@pytest.mark.parametrize(
    "value",
    ["Basic YWxpY2U6cHc=", "Bearer", "Bearer a b", "Bearer a, Bearer b", "Bearertoken", "Token x"],
)
def test_not_one_bearer_token_refused(keys, value):
    decision, _ = check({"authorization": value}, keys, prm=None)
    assert decision.status == 401
    assert decision.rule == "authorization_not_bearer"
    assert challenge(decision) == (
        'Bearer realm="mcp-server", error="invalid_token", '
        'error_description="The Authorization header does not hold one Bearer token"'
    )


def test_scheme_is_case_insensitive(issuer, keys):
    decision, _ = check({"authorization": f"bEaReR   {issuer.mint()} "}, keys)
    assert decision.allowed


def test_token_contents_never_reach_the_header(issuer, keys):
    evil_kid = 'x", error="none\r\nSet-Cookie: a=b'
    token = issuer.mint(kid=evil_kid)
    decision, _ = check({"authorization": f"Bearer {token}"}, keys)
    assert decision.rule == "kid_unknown"
    assert "Set-Cookie" not in challenge(decision)
    assert "Set-Cookie" not in decision.body.decode()


def test_unknown_kid_decision_tells_the_pipeline_to_refresh(issuer, keys):
    token = issuer.mint(key=issuer.rsa_next)
    decision, _ = check({"authorization": f"Bearer {token}"}, keys)
    assert refresh_may_help(decision)
    assert unverified_kid(token) == "rsa-2"
    expired, _ = check({"authorization": f"Bearer {issuer.mint(claims(exp=1))}"}, keys)
    assert not refresh_may_help(expired)


def test_rotation_through_the_pipeline(issuer):
    cache = JwksCache(JWKS_URL)
    cache.begin_fetch(NOW)
    cache.on_fetched(issuer.jwks(issuer.rsa), NOW)
    headers = {"authorization": f"Bearer {issuer.mint(key=issuer.rsa_next)}"}
    now = NOW + 120

    first, _ = check(headers, cache.keys(), now=now)
    assert refresh_may_help(first)
    assert cache.on_unknown_kid(unverified_kid(headers["authorization"][7:]), now)
    cache.begin_fetch(now)
    cache.on_fetched(issuer.jwks(issuer.rsa, issuer.rsa_next), now)

    second, verified = check(headers, cache.keys(), now=now)
    assert second.allowed and verified.key_id == "rsa-2"


# -- 503 ------------------------------------------------------------------------------------------


def test_no_keys_ever_fetched_is_503_naming_the_jwks_url(issuer):
    cache = JwksCache(JWKS_URL)
    cache.begin_fetch(NOW)
    cache.on_fetch_failed("connection refused", NOW)
    decision, _ = check({"authorization": f"Bearer {issuer.mint()}"}, cache.keys())
    assert (decision.status, decision.reason) == (503, "jwks_unavailable")
    assert JWKS_URL in decision.message and "connection refused" in decision.message
    body = json.loads(decision.body)
    assert body["errorCode"] == "jwks_unavailable"
    assert JWKS_URL in body["message"]
    assert "connection refused" not in body["message"]  # internal detail stays in the audit
    assert decision.headers == ()


def test_no_keys_with_discovery_names_the_discovery_url(issuer):
    decision, _ = check({"authorization": f"Bearer {issuer.mint()}"}, None, config=make_config())
    assert decision.status == 503
    assert f"{ISSUER}/.well-known/openid-configuration" in decision.message


def test_issuer_down_with_cached_keys_still_allows(issuer):
    cache = JwksCache(JWKS_URL)
    cache.begin_fetch(NOW)
    cache.on_fetched(issuer.jwks(), NOW)
    cache.begin_fetch(NOW + 600)
    cache.on_fetch_failed("timeout", NOW + 600)
    decision, _ = check({"authorization": f"Bearer {issuer.mint()}"}, cache.keys())
    assert decision.allowed


def test_no_credentials_is_401_even_without_keys():
    decision, _ = check({}, KeysUnavailable(JWKS_URL, "down"))
    assert decision.status == 401


# -- 403 step-up ----------------------------------------------------------------------------------


def test_scope_step_up(issuer, keys):
    _, narrow = check({"authorization": f"Bearer {issuer.mint(claims(scope='tools:read'))}"}, keys)
    denied = scope_decision(narrow, ["tools:read", "tools:call"], resource_metadata_url=PRM_URL)
    assert (denied.allowed, denied.status, denied.reason) == (False, 403, "insufficient_scope")
    assert challenge(denied) == (
        'Bearer error="insufficient_scope", '
        'error_description="The token lacks a scope this request requires", '
        'scope="tools:read tools:call", '
        'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"'
    )
    assert json.loads(denied.body)["missingScopes"] == ["tools:call"]

    wide = issuer.mint(claims(scope="tools:read tools:call"))
    _, stepped_up = check({"authorization": f"Bearer {wide}"}, keys)
    allowed = scope_decision(stepped_up, ["tools:read", "tools:call"])
    assert allowed.allowed and allowed.reason == "scope_granted"


def test_scope_decision_with_realm_and_nothing_required(issuer, keys):
    _, verified = check({"authorization": f"Bearer {issuer.mint()}"}, keys)
    assert scope_decision(verified, []).allowed
    denied = scope_decision(verified, ["admin"], realm="mcp-server")
    assert challenge(denied).startswith('Bearer realm="mcp-server", error="insufficient_scope"')


# -- challenge building ---------------------------------------------------------------------------


def test_challenge_escapes_realm_and_metadata_and_filters_description():
    value = bearer_challenge(
        realm='a"b\\c\r\nd',
        error="invalid_token",
        error_description='bad "quote" \\ and\nnewline é',
        scope=["ok", 'no"pe', "also ok"],
        resource_metadata='https://x/"',
    )
    assert value == (
        'Bearer realm="a\\"b\\\\c??d", error="invalid_token", '
        'error_description="bad ?quote? ? and?newline ?", scope="ok", '
        'resource_metadata="https://x/\\""'
    )


def test_challenge_refuses_unknown_error_codes():
    with pytest.raises(ValueError):
        bearer_challenge(error='invalid_token", x="y')


def test_reason_descriptions_fit_rfc_6750():
    for description in REASONS.values():
        assert all(c in (" ", "!") or ("#" <= c <= "~" and c != "\\") for c in description)


def test_bearer_token_extraction():
    assert bearer_token("Bearer abc.def-_~+/=") == "abc.def-_~+/="
    assert bearer_token("Bearer  a==") == "a=="
    assert bearer_token("Bearer a=b") is None
    assert bearer_token("Bearer\ta") is None


# -- header hygiene -------------------------------------------------------------------------------


def test_app_gets_identity_headers_not_the_token(issuer, keys):
    _, verified = check({"authorization": f"Bearer {issuer.mint(claims(scope='b a'))}"}, keys)
    assert app_identity_headers(verified) == [
        ("x-trustmesh-subject", "alice"),
        ("x-trustmesh-scopes", "a b"),
        ("x-trustmesh-issuer", ISSUER),
    ]


def test_client_sent_token_and_identity_headers_are_stripped_in_any_case():
    inbound = [
        (b"Authorization", b"Bearer t"),
        (b"AUTHORIZATION", b"Bearer t2"),
        (b"X-TrustMesh-Subject", b"admin"),
        (b"x-trustmesh-scopes", b"*"),
        (b"x-TRUSTMESH-anything-new", b"1"),
        (b"content-type", b"application/json"),
        (b"mcp-session-id", b"s"),
    ]
    assert strip_client_credentials(inbound) == [
        (b"content-type", b"application/json"),
        (b"mcp-session-id", b"s"),
    ]
    assert must_strip("Authorization") and not must_strip("x-forwarded-for")


# -- RFC 9728 -------------------------------------------------------------------------------------


def test_protected_resource_metadata_document():
    doc = json.loads(
        protected_resource_metadata(
            "https://mcp.example.com/mcp", ISSUER, ["tools:read", "tools:call", "tools:read"]
        )
    )
    assert doc == {
        "resource": "https://mcp.example.com/mcp",
        "authorization_servers": [ISSUER],
        "scopes_supported": ["tools:read", "tools:call"],
        "bearer_methods_supported": ["header"],
    }


@pytest.mark.parametrize(
    ("resource", "issuer", "scopes"),
    [
        ("http://mcp.example.com/mcp", ISSUER, []),
        ("https://mcp.example.com/mcp#x", ISSUER, []),
        ("https://mcp.example.com/mcp", ISSUER, ['bad"scope']),
    ],
)
def test_protected_resource_metadata_refuses_bad_input(resource, issuer, scopes):
    with pytest.raises(ValueError):
        protected_resource_metadata(resource, issuer, scopes)


@pytest.mark.parametrize(
    ("resource", "paths"),
    [
        (
            "https://mcp.example.com/mcp",
            ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"),
        ),
        (
            "https://mcp.example.com/tenant/mcp/",
            (
                "/.well-known/oauth-protected-resource/tenant/mcp",
                "/.well-known/oauth-protected-resource",
            ),
        ),
        ("https://mcp.example.com", ("/.well-known/oauth-protected-resource",)),
        ("https://mcp.example.com/", ("/.well-known/oauth-protected-resource",)),
    ],
)
def test_well_known_paths_path_suffixed_first(resource, paths):
    assert protected_resource_metadata_paths(resource) == paths


def test_metadata_url_from_resource():
    assert protected_resource_metadata_url("https://mcp.example.com:8443/mcp") == (
        "https://mcp.example.com:8443/.well-known/oauth-protected-resource/mcp"
    )
    derived = make_config(resource="https://mcp.example.com/mcp")
    assert resource_metadata_url_for(derived) == PRM_URL
    explicit = make_config(resource="https://a/mcp", resource_metadata_url="https://a/prm")
    assert resource_metadata_url_for(explicit) == "https://a/prm"
    assert resource_metadata_url_for(make_config()) is None
