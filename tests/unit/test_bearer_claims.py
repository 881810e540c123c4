"""Each claim check on its own, as a table: boundaries, types and leeway against a given now."""

from __future__ import annotations

import pytest

from sidecar.bearer import (
    TokenRejected,
    check_audience,
    check_expiry,
    check_issued_at,
    check_issuer,
    check_not_before,
    scopes_of,
    subject_of,
)

NOW = 1_000_000.0
LEEWAY = 60.0


def reason(check, *args) -> str | None:
    try:
        check(*args)
    except TokenRejected as exc:
        return exc.reason_code
    return None


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": NOW + 1}, None),
        ({"exp": NOW - 59}, None),
        ({"exp": NOW - 60}, "token_expired"),  # now >= exp + leeway
        ({"exp": NOW - 61.5}, "token_expired"),
        ({}, "exp_missing"),
        ({"exp": None}, "claim_invalid"),
        ({"exp": "9999999999"}, "claim_invalid"),
        ({"exp": False}, "claim_invalid"),
        ({"exp": float("inf")}, "claim_invalid"),
        ({"exp": 10**400}, "claim_invalid"),  # JSON integers are unbounded; doubles are not
    ],
)
def test_check_expiry(claims, expected):
    assert reason(check_expiry, claims, NOW, LEEWAY) == expected


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({}, None),
        ({"nbf": NOW}, None),
        ({"nbf": NOW + 60}, None),
        ({"nbf": NOW + 60.5}, "token_not_yet_valid"),
        ({"nbf": [NOW]}, "claim_invalid"),
    ],
)
def test_check_not_before(claims, expected):
    assert reason(check_not_before, claims, NOW, LEEWAY) == expected


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({}, None),
        ({"iat": NOW - 86400}, None),
        ({"iat": NOW + 60}, None),
        ({"iat": NOW + 61}, "iat_in_future"),
        ({"iat": float("nan")}, "claim_invalid"),
    ],
)
def test_check_issued_at(claims, expected):
    assert reason(check_issued_at, claims, NOW, LEEWAY) == expected


def test_zero_leeway_is_exact():
    assert reason(check_expiry, {"exp": NOW}, NOW, 0.0) == "token_expired"
    assert reason(check_expiry, {"exp": NOW + 0.001}, NOW, 0.0) is None
    assert reason(check_not_before, {"nbf": NOW + 0.001}, NOW, 0.0) == "token_not_yet_valid"


@pytest.mark.parametrize(
    ("iss", "expected"),
    [
        ("https://idp.example", None),
        ("https://idp.example/", "issuer_mismatch"),
        ("https://IDP.example", "issuer_mismatch"),
        (["https://idp.example"], "issuer_mismatch"),
        (None, "issuer_mismatch"),
    ],
)
def test_check_issuer(iss, expected):
    assert reason(check_issuer, {"iss": iss}, "https://idp.example") == expected


@pytest.mark.parametrize(
    ("aud", "expected"),
    [
        ("api", None),
        (["x", "api"], None),
        ("API", "audience_mismatch"),
        ("api ", "audience_mismatch"),
        (["x"], "audience_mismatch"),
        ([], "audience_mismatch"),
        (["api", 1], "audience_mismatch"),
        ({"api": True}, "audience_mismatch"),
        (None, "audience_mismatch"),
    ],
)
def test_check_audience(aud, expected):
    assert reason(check_audience, {"aud": aud}, "api") == expected


@pytest.mark.parametrize(
    ("sub", "ok"),
    [
        ("alice", True),
        ("auth0|65f0c", True),
        ("repo:org/name:ref:refs/heads/main", True),
        ("with inner space", True),
        ("", False),
        (" lead", False),
        ("trail ", False),
        ("cr\r", False),
        ("ünïcode", False),
        ("x" * 1025, False),
        (7, False),
    ],
)
def test_subject_of(sub, ok):
    if ok:
        assert subject_of({"sub": sub}) == sub
    else:
        assert reason(subject_of, {"sub": sub}) == "subject_invalid"


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({}, set()),
        ({"scope": ""}, set()),
        ({"scope": "a b  c"}, {"a", "b", "c"}),
        ({"scp": ["a", "b"]}, {"a", "b"}),
        ({"scp": "a b"}, {"a", "b"}),
        ({"scope": "a", "scp": ["b"]}, {"a", "b"}),
        (
            {"scope": "mcp:tools/call https://api.example/read"},
            {"mcp:tools/call", "https://api.example/read"},
        ),
    ],
)
def test_scopes_of(claims, scopes):
    assert scopes_of(claims) == scopes


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": ["a"]},
        {"scope": 1},
        {"scp": [1]},
        {"scp": {"a": 1}},
        {"scope": "a\tb"},
        {"scope": 'a"b'},
        {"scope": "a\\b"},
        {"scp": ["a b"]},
        {"scope": "é"},
    ],
)
def test_unreadable_scopes_refuse_the_token(claims):
    assert reason(scopes_of, claims) == "scope_invalid"
