"""Properties of the bearer layer over inputs an attacker chooses.

* No request header value, token or claim set makes a check raise anything but a refusal.
* Every ``WWW-Authenticate`` value we emit parses under RFC 9110's challenge grammar — so no CR,
  LF or unescaped quote can escape a parameter — whatever realm, URL, description or scopes it
  was built from.
"""

from __future__ import annotations

import json
import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.bearer import (
    TokenRejected,
    bearer_challenge,
    check_bearer,
    quoted_string,
    scope_decision,
    validate_token,
)
from tests._support.bearer import JWKS_URL, NOW, PRM_URL, Issuer, b64url, claims, make_config

ISSUER_KEYS = Issuer()  # once per module: key generation is the slow part
KEYS = ISSUER_KEYS.snapshot()
CONFIG = make_config(jwks_url=JWKS_URL)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 9110 §11.3 / §5.6.4: challenge = auth-scheme [ 1*SP #auth-param ], every value quoted here.
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_PARAM = rf"[!#$%&'*+.^_`|~0-9A-Za-z-]+={_QUOTED}"
CHALLENGE = re.compile(rf"Bearer(?: {_PARAM}(?:, {_PARAM})*)?")

B64URL = string.ascii_letters + string.digits + "-_"


def assert_safe_headers(headers) -> None:
    for name, value in headers:
        assert not set("\r\n\x00") & set(name + value)
        if name == "WWW-Authenticate":
            assert CHALLENGE.fullmatch(value), value


def unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1])


# -- header values --------------------------------------------------------------------------------


@SETTINGS
@given(value=st.text(), realm=st.text(), url=st.none() | st.text())
def test_any_authorization_value_is_refused_with_a_well_formed_challenge(value, realm, url):
    decision, verified = check_bearer(
        {"authorization": value},
        config=CONFIG,
        keys=KEYS,
        now=NOW,
        resource_metadata_url=url,
        realm=realm,
    )
    assert verified is None
    assert decision.status == 401 and not decision.allowed
    assert_safe_headers(decision.headers)
    assert json.loads(decision.body)["errorCode"] in ("missing_token", "invalid_token")


@SETTINGS
@given(
    realm=st.none() | st.text(),
    error=st.none() | st.sampled_from(["invalid_request", "invalid_token", "insufficient_scope"]),
    description=st.none() | st.text(),
    scope=st.lists(st.text()),
    url=st.none() | st.text(),
)
def test_challenge_is_well_formed_for_any_parameters(realm, error, description, scope, url):
    value = bearer_challenge(
        realm=realm,
        error=error,
        error_description=description,
        scope=scope,
        resource_metadata=url,
    )
    assert CHALLENGE.fullmatch(value), value
    for match in re.finditer(r'error_description="([^"]*)"', value):
        assert "\\" not in match.group(1)  # RFC 6750 allows no quoted-pair here


@SETTINGS
@given(st.text())
def test_quoted_string_round_trips_printable_text(text):
    quoted = quoted_string(text)
    assert re.fullmatch(_QUOTED, quoted)
    expected = "".join(c if " " <= c <= "~" else "?" for c in text)
    assert unquote(quoted) == expected


@SETTINGS
@given(required=st.lists(st.text(), min_size=1), realm=st.none() | st.text())
def test_scope_challenge_is_well_formed_for_any_required_scopes(required, realm):
    verified = validate_token(ISSUER_KEYS.mint(), config=CONFIG, keys=KEYS, now=NOW)
    decision = scope_decision(verified, required, resource_metadata_url=PRM_URL, realm=realm)
    assert_safe_headers(decision.headers)
    if not decision.allowed:
        assert decision.status == 403
        json.loads(decision.body)


# -- garbage tokens -------------------------------------------------------------------------------


def _segment(data: bytes) -> str:
    return b64url(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "PS512"]) | json_values,
        "kid": st.sampled_from(["rsa-1", "ec-1", "ed-1", "nope"]) | json_values,
        "crit": json_values,
        "b64": json_values,
        "typ": json_values,
    },
)
garbage_tokens = st.one_of(
    st.text(),
    st.text(alphabet=B64URL + ".", max_size=300),
    st.builds(
        lambda h, p, s: f"{_segment(h)}.{_segment(p)}.{_segment(s)}",
        st.binary(max_size=80),
        st.binary(max_size=80),
        st.binary(max_size=300),
    ),
    st.builds(
        lambda h, p, s: f"{_segment(json.dumps(h).encode())}.{_segment(p)}.{_segment(s)}",
        headers,
        st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=300),
    ),
)


@SETTINGS
@given(garbage_tokens)
def test_garbage_tokens_are_refused_never_raised(token):
    try:
        validate_token(token, config=CONFIG, keys=KEYS, now=NOW)
    except TokenRejected:
        pass
    else:
        raise AssertionError("a garbage token was accepted")
    decision, _ = check_bearer(
        {"authorization": f"Bearer {token}"},
        config=CONFIG,
        keys=KEYS,
        now=NOW,
        resource_metadata_url=PRM_URL,
        realm="mcp",
    )
    assert decision.status == 401
    assert_safe_headers(decision.headers)


registered_claims = st.fixed_dictionaries(
    {},
    optional={
        "iss": json_values,
        "aud": json_values,
        "sub": json_values,
        "exp": json_values,
        "nbf": json_values,
        "iat": json_values,
        "scope": json_values,
        "scp": json_values,
    },
)


@settings(max_examples=150, deadline=None)
@given(overrides=registered_claims)
def test_signed_tokens_with_odd_claims_are_accepted_or_refused_never_raised(overrides):
    # Properly signed (EC, fast): the claim checks alone must cope with any JSON value.
    token = ISSUER_KEYS.mint(claims() | overrides, key=ISSUER_KEYS.ec, alg="ES256")
    try:
        verified = validate_token(token, config=CONFIG, keys=KEYS, now=NOW)
    except TokenRejected as exc:
        assert exc.reason_code != "signature_invalid"
    else:
        assert verified.claims["iss"] == CONFIG.issuer
        assert isinstance(verified.subject, str)
