"""Validate one bearer JWT against one configuration and one JWKS snapshot.

Order of checks, cheapest and least trusting first — nothing from the token picks what the
verifier trusts:

1. shape: three base64url segments, bounded length (``malformed_token``);
2. header ``alg`` in the *configured* allow-list (``none`` and HS* can never be in it), and
   header ``typ`` equal to the configured ``requiredTokenType`` if there is one (RFC 9068 §4:
   ``at+jwt``, so an ID token from the same issuer is not taken for an access token);
3. header ``kid`` present, found exactly once in the snapshot;
4. the key fits the algorithm: its type (RSA ↔ RS*/PS*, EC curve ↔ ES*, OKP ↔ EdDSA, ``oct`` ↔
   nothing), its ``use``/``key_ops`` allow verification, and its own ``alg`` (if any) is the
   header's — so an RSA key can never be fed to HMAC or to ES256;
5. the signature, by pyjwt, with a ``PyJWK`` bound to that one algorithm and ``algorithms=[alg]``;
6. the claims, by ``claims.py``, against the given ``now``.

pyjwt's exceptions are mapped once, here, to our reason codes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from jwt.exceptions import InvalidKeyError, InvalidSignatureError, PyJWTError

from . import claims as c
from .config import BearerConfig
from .errors import TokenRejected
from .jwks import JwkEntry, JwksSnapshot, algorithms_for, signs

MAX_TOKEN_LENGTH = 8192
# JWS compact serialization (RFC 7515 §7.1). An empty signature is let through to be refused by
# name: "alg": "none" by the allow-list, anything else as a bad signature.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

# Signature only: every claim is checked by claims.py against the caller's `now`.
_SIGNATURE_ONLY_OPTIONS: dict[str, Any] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    "enforce_minimum_key_length": True,
}


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token proved. The token itself is not kept: it is never passed on."""

    subject: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(repr=False, compare=False)
    key_id: str
    issuer: str
    algorithm: str


def validate_token(
    token: str, *, config: BearerConfig, keys: JwksSnapshot, now: float
) -> VerifiedToken:
    """Return what ``token`` proves, or raise ``TokenRejected`` naming the check that failed."""
    header = _unverified_header(token)
    alg = _allowed_algorithm(header, config.algorithms)
    if config.required_token_type is not None:
        _check_token_type(header, config.required_token_type)
    kid = _key_id(header)
    entry = _entry_for(kid, keys)
    _check_key_fits(entry, alg)
    claims = _verified_claims(token, entry, alg)
    c.check_issuer(claims, config.issuer)
    c.check_audience(claims, config.audience)
    c.check_expiry(claims, now, config.leeway)
    c.check_not_before(claims, now, config.leeway)
    c.check_issued_at(claims, now, config.leeway)
    return VerifiedToken(
        subject=c.subject_of(claims),
        scopes=c.scopes_of(claims),
        claims=MappingProxyType(claims),
        key_id=kid,
        issuer=config.issuer,
        algorithm=alg,
    )


def unverified_kid(token: str) -> str | None:
    """The ``kid`` a token names, for ``JwksCache.on_unknown_kid``; None if it has none."""
    try:
        return _key_id(_unverified_header(token))
    except TokenRejected:
        return None


def _unverified_header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenRejected("malformed_token")
    if not _COMPACT_JWS.fullmatch(token):
        raise TokenRejected("malformed_token")
    try:
        return jwt.get_unverified_header(token)
    except PyJWTError:
        raise TokenRejected("malformed_token") from None


def _allowed_algorithm(header: Mapping[str, Any], allowed: tuple[str, ...]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise TokenRejected("algorithm_not_allowed")
    return alg


def _check_token_type(header: Mapping[str, Any], required: str) -> None:
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != required:
        raise TokenRejected("token_type_invalid")


def _key_id(header: Mapping[str, Any]) -> str:
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("kid_missing")
    return kid


def _entry_for(kid: str, keys: JwksSnapshot) -> JwkEntry:
    if kid in keys.ambiguous_kids:
        raise TokenRejected("kid_ambiguous")
    entry = keys.lookup(kid)
    if entry is None:
        raise TokenRejected("kid_unknown")
    return entry


def _check_key_fits(entry: JwkEntry, alg: str) -> None:
    if alg not in algorithms_for(entry):
        raise TokenRejected("key_type_mismatch")
    if not signs(entry):
        raise TokenRejected("key_use_not_sig")
    if entry.alg is not None and entry.alg != alg:
        raise TokenRejected("key_alg_mismatch")
    if alg not in entry.verifiers:  # a key parse_jwks could not bind to alg: never verify
        raise TokenRejected("key_type_mismatch")


def _verified_claims(token: str, entry: JwkEntry, alg: str) -> dict[str, Any]:
    try:
        decoded = jwt.decode_complete(
            token,
            key=entry.verifiers[alg],
            algorithms=[alg],
            options=_SIGNATURE_ONLY_OPTIONS,  # type: ignore[arg-type]
        )
    except InvalidSignatureError:
        raise TokenRejected("signature_invalid") from None
    except InvalidKeyError:
        raise TokenRejected("key_type_mismatch") from None
    except PyJWTError:
        raise TokenRejected("malformed_token") from None
    return decoded["payload"]
