"""One small function per JWT claim check (RFC 7519 §4.1, RFC 9068 §4), all against a given ``now``.

pyjwt checks ``exp``/``nbf``/``iat`` against the wall clock it reads itself
(``datetime.now()`` inside ``PyJWT._validate_claims``), which tests cannot drive and which the
rest of the sidecar never does. So pyjwt verifies only the signature (all ``verify_*`` claim
options off) and these functions decide the claims, each raising ``TokenRejected`` with its own
reason. They are applied only to a payload whose signature has already verified.

Leeway forgives clock skew in the caller's favour by at most ``leeway`` seconds in each
direction: a token is expired once ``now >= exp + leeway`` (RFC 7519 §4.1.4: "on or after"),
not yet valid while ``now < nbf - leeway``, and refused if issued more than ``leeway`` seconds in
the future.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import TokenRejected

# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Visible ASCII, inner spaces allowed: the subject goes into a header for the app.
_SUBJECT = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,1022}[\x21-\x7e])?")


def numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """RFC 7519 §2 NumericDate: a JSON number of seconds. Booleans and NaN are not numbers."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("claim_invalid", f"The {name} claim is not a number")
    try:
        # (an int is unbounded: one no double can hold overflows, and is no date either)
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise TokenRejected("claim_invalid", f"The {name} claim is not a finite number")
    return seconds


def check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    """``iss`` equals the configured issuer exactly: no slash trimming, no case folding."""
    iss = claims.get("iss")
    if not isinstance(iss, str) or iss != issuer:
        raise TokenRejected("issuer_mismatch")


def check_audience(claims: Mapping[str, Any], audience: str) -> None:
    """``aud`` is a string or a list of strings holding our audience (RFC 7519 §4.1.3)."""
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise TokenRejected("audience_mismatch")
    if audience not in values:
        raise TokenRejected("audience_mismatch")


def check_expiry(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """``exp`` is required (a token without one would never expire) and must not have passed."""
    exp = numeric_date(claims, "exp")
    if exp is None:
        raise TokenRejected("exp_missing")
    if now >= exp + leeway:
        raise TokenRejected("token_expired")


def check_not_before(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """``nbf``, when present, must have been reached (RFC 7519 §4.1.5)."""
    nbf = numeric_date(claims, "nbf")
    if nbf is not None and now < nbf - leeway:
        raise TokenRejected("token_not_yet_valid")


def check_issued_at(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    """``iat``, when present, must not lie in the future: such a token was minted by a skewed or
    forged clock and would outlive its stated lifetime."""
    iat = numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenRejected("iat_in_future")


def subject_of(claims: Mapping[str, Any]) -> str:
    """``sub`` (RFC 9068 §2.2: required in access tokens), printable ASCII so it can be a header."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub):
        raise TokenRejected("subject_invalid")
    return sub


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (RFC 8693 §4.2: space-separated string) and ``scp`` (a list, as
    Azure AD and Okta send it, or a string), united. Anything else refuses the token: a scope we
    cannot read is not a scope we may grant."""
    scopes: set[str] = set()
    if "scope" in claims:
        scopes |= _scope_tokens(claims["scope"], allow_list=False)
    if "scp" in claims:
        scopes |= _scope_tokens(claims["scp"], allow_list=True)
    return frozenset(scopes)


def _scope_tokens(value: Any, *, allow_list: bool) -> set[str]:
    if isinstance(value, str):
        tokens = [t for t in value.split(" ") if t]
    elif allow_list and isinstance(value, list) and all(isinstance(t, str) for t in value):
        tokens = list(value)
    else:
        raise TokenRejected("scope_invalid")
    if not all(SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise TokenRejected("scope_invalid")
    return set(tokens)
