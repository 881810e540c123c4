"""validate_token against tokens minted by joserfc. Each refusal sits beside the token it would
have accepted, so a test cannot pass because everything is refused."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
from joserfc import jws
from joserfc.jwk import OctKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter

from sidecar.bearer import TokenRejected, unverified_kid, validate_token
from tests._support.bearer import (
    AUDIENCE,
    ISSUER,
    NOW,
    Issuer,
    b64url,
    claims,
    hs256_with_public_pem,
    make_config,
    unsigned_token,
    with_payload,
)


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def keys(issuer):
    return issuer.snapshot(issuer.rsa, issuer.ec, issuer.ec384, issuer.ec521, issuer.ed)


CONFIG = make_config()


def accept(token, keys, config=CONFIG, now=NOW):
    return validate_token(token, config=config, keys=keys, now=now)


def refusal(token, keys, config=CONFIG, now=NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        validate_token(token, config=config, keys=keys, now=now)
    return info.value.reason_code


# -- the accepted shape ---------------------------------------------------------------------------


def test_valid_token_accepted(issuer, keys):
    verified = accept(issuer.mint(claims(scope="tools:read tools:call")), keys)
    assert verified.subject == "alice"
    assert verified.scopes == {"tools:read", "tools:call"}
    assert verified.key_id == "rsa-1"
    assert verified.issuer == ISSUER
    assert verified.algorithm == "RS256"
    assert verified.claims["aud"] == AUDIENCE
    assert isinstance(verified.claims, MappingProxyType)


@pytest.mark.parametrize(
    ("alg", "key_name"),
    [
        ("RS256", "rsa"),
        ("RS384", "rsa"),
        ("RS512", "rsa"),
        ("PS256", "rsa"),
        ("PS384", "rsa"),
        ("PS512", "rsa"),
        ("ES256", "ec"),
        ("ES384", "ec384"),
        ("ES512", "ec521"),
        ("EdDSA", "ed"),
    ],
)
def test_every_allowed_algorithm_accepted(issuer, keys, alg, key_name):
    key = getattr(issuer, key_name)
    assert accept(issuer.mint(key=key, alg=alg), keys).algorithm == alg


# -- algorithm attacks ----------------------------------------------------------------------------


def test_alg_none_refused(issuer, keys):
    assert refusal(unsigned_token(claims()), keys) == "algorithm_not_allowed"
    accept(issuer.mint(claims()), keys)


def test_hs256_with_public_key_confusion_refused(issuer, keys):
    forged = hs256_with_public_pem(issuer, claims())
    assert refusal(forged, keys) == "algorithm_not_allowed"
    accept(issuer.mint(claims()), keys)


def test_independent_library_also_refuses_public_pem_as_hmac_secret(issuer):
    # Why the forgery above is built by hand: joserfc shares the defence.
    with pytest.raises(ValueError, match="must not be used as oct keys"):
        OctKey.import_key(issuer.rsa.as_pem(private=False))


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_refused_even_with_the_right_secret(keys, alg):
    secret = OctKey.generate_key(512, parameters={"kid": "rsa-1"})
    token = Issuer.mint(None, claims(), key=secret, alg=alg)  # type: ignore[arg-type]
    assert refusal(token, keys) == "algorithm_not_allowed"


def test_es256_header_with_rsa_kid_refused(issuer, keys):
    token = issuer.mint(key=issuer.ec, alg="ES256", kid="rsa-1")
    assert refusal(token, keys) == "key_type_mismatch"
    accept(issuer.mint(key=issuer.ec, alg="ES256"), keys)


def test_rs256_header_with_ec_kid_refused(issuer, keys):
    token = issuer.mint(key=issuer.rsa, alg="RS256", kid="ec-1")
    assert refusal(token, keys) == "key_type_mismatch"


def test_es384_header_with_p256_kid_refused(issuer, keys):
    token = issuer.mint(key=issuer.ec384, alg="ES384", kid="ec-1")
    assert refusal(token, keys) == "key_type_mismatch"
    accept(issuer.mint(key=issuer.ec384, alg="ES384"), keys)


def test_algorithm_allow_list_comes_from_configuration(issuer, keys):
    es_only = make_config(algorithms=("ES256",))
    assert refusal(issuer.mint(), keys, config=es_only) == "algorithm_not_allowed"
    accept(issuer.mint(key=issuer.ec, alg="ES256"), keys, config=es_only)


def test_oct_key_in_jwks_never_verifies(issuer):
    secret = OctKey.generate_key(256, parameters={"kid": "hmac-1"})
    keys = issuer.snapshot(issuer.rsa, extra=[secret.as_dict(private=True)])
    hs = Issuer.mint(None, claims(), key=secret, alg="HS256")  # type: ignore[arg-type]
    assert refusal(hs, keys) == "algorithm_not_allowed"
    rs_naming_oct = issuer.mint(kid="hmac-1")
    assert refusal(rs_naming_oct, keys) == "key_type_mismatch"
    accept(issuer.mint(), keys)


# -- key selection --------------------------------------------------------------------------------


def test_missing_kid_refused(issuer, keys):
    assert refusal(issuer.mint(kid=None), keys) == "kid_missing"
    accept(issuer.mint(), keys)


def test_empty_kid_refused(issuer, keys):
    assert refusal(issuer.mint(header={"kid": ""}), keys) == "kid_missing"


def test_unknown_kid_refused_and_marked_refreshable(issuer, keys):
    token = issuer.mint(key=issuer.rsa_next)
    with pytest.raises(TokenRejected) as info:
        accept(token, keys)
    assert info.value.reason_code == "kid_unknown"
    assert info.value.refresh_may_help
    assert unverified_kid(token) == "rsa-2"


def test_duplicate_kid_in_jwks_refused_as_ambiguous(issuer):
    twin = issuer.rsa_next.as_dict(private=False) | {"kid": "rsa-1"}
    keys = issuer.snapshot(issuer.rsa, issuer.ec, extra=[twin])
    assert refusal(issuer.mint(), keys) == "kid_ambiguous"
    accept(issuer.mint(key=issuer.ec, alg="ES256"), keys)


def test_encryption_key_never_verifies(issuer):
    enc = issuer.rsa_next.as_dict(private=False) | {"use": "enc"}
    keys = issuer.snapshot(issuer.rsa, extra=[enc])
    assert refusal(issuer.mint(key=issuer.rsa_next), keys) == "key_use_not_sig"
    accept(issuer.mint(), keys)


def test_key_ops_without_verify_never_verifies(issuer):
    wrap = issuer.rsa_next.as_dict(private=False) | {"key_ops": ["wrapKey"]}
    keys = issuer.snapshot(issuer.rsa, extra=[wrap])
    assert refusal(issuer.mint(key=issuer.rsa_next), keys) == "key_use_not_sig"
    verify = issuer.rsa_next.as_dict(private=False) | {"key_ops": ["verify"]}
    accept(issuer.mint(key=issuer.rsa_next), issuer.snapshot(issuer.rsa, extra=[verify]))


def test_jwk_alg_pins_the_algorithm(issuer):
    pinned = issuer.rsa_next.as_dict(private=False) | {"alg": "RS256"}
    keys = issuer.snapshot(issuer.rsa, extra=[pinned])
    assert refusal(issuer.mint(key=issuer.rsa_next, alg="PS256"), keys) == "key_alg_mismatch"
    accept(issuer.mint(key=issuer.rsa_next, alg="RS256"), keys)


# -- signature ------------------------------------------------------------------------------------


def test_tampered_payload_refused(issuer, keys):
    token = issuer.mint(claims(sub="alice"))
    forged = with_payload(token, claims(sub="admin"))
    assert refusal(forged, keys) == "signature_invalid"
    accept(token, keys)


def test_signature_by_another_key_under_our_kid_refused(issuer, keys):
    token = issuer.mint(key=issuer.rsa_next, kid="rsa-1")
    assert refusal(token, keys) == "signature_invalid"


def test_signature_stripped_refused(issuer, keys):
    header, payload, _ = issuer.mint().split(".")
    assert refusal(f"{header}.{payload}.", keys) == "signature_invalid"


# -- claims ---------------------------------------------------------------------------------------


def test_expired_token_refused(issuer, keys):
    assert refusal(issuer.mint(claims(exp=int(NOW) - 61)), keys) == "token_expired"
    accept(issuer.mint(claims(exp=int(NOW) - 59)), keys)  # inside the 60 s leeway


def test_expiry_is_exclusive_at_exp_plus_leeway(issuer, keys):
    token = issuer.mint(claims(exp=int(NOW) - 60))
    assert refusal(token, keys) == "token_expired"
    accept(token, keys, now=NOW - 0.5)


def test_leeway_is_configurable(issuer, keys):
    token = issuer.mint(claims(exp=int(NOW) - 10))
    assert refusal(token, keys, config=make_config(leeway=0.0)) == "token_expired"
    accept(token, keys, config=make_config(leeway=30.0))


def test_missing_exp_refused(issuer, keys):
    assert refusal(issuer.mint(claims(exp=None)), keys) == "exp_missing"


def test_not_yet_valid_token_refused(issuer, keys):
    assert refusal(issuer.mint(claims(nbf=int(NOW) + 61)), keys) == "token_not_yet_valid"
    accept(issuer.mint(claims(nbf=int(NOW) + 59)), keys)


def test_iat_in_the_future_refused(issuer, keys):
    token = issuer.mint(claims(iat=int(NOW) + 3600, exp=int(NOW) + 7200))
    assert refusal(token, keys) == "iat_in_future"
    accept(issuer.mint(claims(iat=int(NOW) + 30)), keys)


def test_time_comes_from_the_caller_not_the_clock(issuer, keys):
    # Minted for NOW (2027); the real clock would call it "issued in the future".
    token = issuer.mint(claims())
    accept(token, keys, now=NOW)
    assert refusal(token, keys, now=NOW + 3600) == "token_expired"


def test_wrong_issuer_refused(issuer, keys):
    assert refusal(issuer.mint(claims(iss="https://evil.example")), keys) == "issuer_mismatch"
    accept(issuer.mint(claims(iss=ISSUER)), keys)


@pytest.mark.parametrize("iss", [ISSUER + "/", ISSUER.upper(), ISSUER.removeprefix("https://")])
def test_issuer_must_match_exactly(issuer, keys, iss):
    assert refusal(issuer.mint(claims(iss=iss)), keys) == "issuer_mismatch"


def test_trailing_slash_configured_issuer_refuses_token_without_it(issuer, keys):
    slash = make_config(issuer=ISSUER + "/")
    assert refusal(issuer.mint(claims(iss=ISSUER)), keys, config=slash) == "issuer_mismatch"
    accept(issuer.mint(claims(iss=ISSUER + "/")), keys, config=slash)


def test_missing_issuer_refused(issuer, keys):
    assert refusal(issuer.mint(claims(iss=None)), keys) == "issuer_mismatch"


def test_wrong_audience_refused(issuer, keys):
    assert refusal(issuer.mint(claims(aud="other-api")), keys) == "audience_mismatch"
    accept(issuer.mint(claims(aud=AUDIENCE)), keys)


def test_audience_list_containing_ours_accepted(issuer, keys):
    accept(issuer.mint(claims(aud=["other-api", AUDIENCE])), keys)
    assert refusal(issuer.mint(claims(aud=["other-api"])), keys) == "audience_mismatch"


@pytest.mark.parametrize("aud", [None, [], "", [AUDIENCE, 7], {"aud": AUDIENCE}])
def test_malformed_or_missing_audience_refused(issuer, keys, aud):
    payload = claims(aud=aud) if aud is not None else claims(aud=None)
    assert refusal(issuer.mint(payload), keys) == "audience_mismatch"


@pytest.mark.parametrize("sub", [None, "", " alice", "al\nice", "alïce", 42])
def test_subject_must_be_printable(issuer, keys, sub):
    assert refusal(issuer.mint(claims(sub=sub)), keys) == "subject_invalid"


@pytest.mark.parametrize("exp", ["1900000000", True, float("inf"), float("nan")])
def test_exp_that_is_not_a_finite_number_refused(issuer, keys, exp):
    # json.dumps writes inf as `Infinity`, which Python's json (and so pyjwt) reads back.
    payload = json.dumps(claims(exp=exp)).encode()
    assert refusal(issuer.mint(payload), keys) == "claim_invalid"


def test_scp_list_and_scope_string_are_united(issuer, keys):
    verified = accept(issuer.mint(claims(scope="a b", scp=["c", "a"])), keys)
    assert verified.scopes == {"a", "b", "c"}


@pytest.mark.parametrize("scope", [["a"], 7, 'a "b'])
def test_unreadable_scope_refused(issuer, keys, scope):
    assert refusal(issuer.mint(claims(scope=scope)), keys) == "scope_invalid"


# -- shape ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a..c",
        "é.é.é",
        "eyJ.eyJ.sig",
        b64url(b"[]") + "." + b64url(b"{}") + ".c2ln",
        b64url(b'{"alg":"RS256","kid":7}') + "." + b64url(b"{}") + ".c2ln",
    ],
)
def test_malformed_token_refused(keys, token):
    assert refusal(token, keys) == "malformed_token"


def test_payload_that_is_not_an_object_refused(issuer, keys):
    assert refusal(issuer.mint(b"[1, 2]"), keys) == "malformed_token"


def test_unknown_critical_header_refused(issuer, keys):
    # RFC 7515 §4.1.11: a crit extension the verifier does not understand makes the JWS invalid.
    registry = JWSRegistry({"x-policy": HeaderParameter("test extension", "str")}, ["RS256"])
    protected = {"alg": "RS256", "kid": "rsa-1", "crit": ["x-policy"], "x-policy": "strict"}
    token = jws.serialize_compact(protected, json.dumps(claims()), issuer.rsa, registry=registry)
    assert refusal(token, keys) == "malformed_token"


def test_oversized_token_refused(issuer, keys):
    token = issuer.mint(claims(padding="x" * 9000))
    assert refusal(token, keys) == "malformed_token"
