"""Bearer tokens for end-to-end tests, minted with joserfc — an independent JOSE library.

Neither pyjwt (which the sidecar verifies with) nor any trustmesh code signs these, so a token
the sidecar accepts is a standard JWS, and a forged one is forged the way an attacker's tool
would forge it: ``alg: none``, an HMAC keyed with the issuer's public key (algorithm confusion,
CVE-2015-9235 class), a payload edited after signing, a header without ``kid``.
"""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey


def rsa_key(kid: str) -> RSAKey:
    """A fresh 2048-bit RSA signing key published as ``kid`` (``use: sig``, ``alg: RS256``)."""
    return RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


def jwks(*keys: RSAKey) -> dict[str, Any]:
    """The public JWK Set an issuer would serve for ``keys``."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def claims(
    issuer: str,
    audience: str,
    subject: str = "client-app",
    *,
    scope: str | None = None,
    exp_in: float = 300,
    nbf_in: float | None = None,
    iat_in: float = 0,
    now: float | None = None,
) -> dict[str, Any]:
    """An RFC 9068-shaped claim set; times are offsets from ``now`` (default: the wall clock)."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "exp": int(now + exp_in),
        "iat": int(now + iat_in),
        "jti": f"jti-{time.monotonic_ns()}",
    }
    if nbf_in is not None:
        out["nbf"] = int(now + nbf_in)
    if scope is not None:
        out["scope"] = scope
    return out


def sign(
    key: RSAKey, payload: dict[str, Any], *, kid: str | None = "default", typ: str | None = "at+jwt"
) -> str:
    """RS256 over ``payload``; ``kid`` defaults to the key's own, ``None`` leaves it (or ``typ``)
    out."""
    header: dict[str, Any] = {"alg": "RS256"}
    if typ is not None:
        header["typ"] = typ
    if kid == "default":
        header["kid"] = key.kid
    elif kid is not None:
        header["kid"] = kid
    return jwt.encode(header, payload, key)


def unsigned(payload: dict[str, Any], kid: str) -> str:
    """``alg: none`` with an empty signature (RFC 7519 §6.1 "unsecured JWT")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns that "none" is deprecated: we know
        return jwt.encode({"alg": "none", "kid": kid}, payload, None, algorithms=["none"])


def hmac_with_public_key(public_key: RSAKey, payload: dict[str, Any]) -> str:
    """HS256 keyed with the issuer's *public* key PEM: the algorithm-confusion forgery.

    joserfc refuses to import a public key as an HMAC secret (rightly); the attacker builds the
    ``OctKey`` directly, so do we. A verifier that let the token pick HS256 and fed it the RSA
    key's PEM would accept this.
    """
    pem = public_key.as_pem(private=False)
    secret = OctKey(pem, pem)
    header = {"alg": "HS256", "kid": public_key.kid, "typ": "at+jwt"}
    return jwt.encode(header, payload, secret, algorithms=["HS256"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tampered(token: str, **changes: Any) -> str:
    """``token`` with claims changed after signing; header and signature kept as they were."""
    header, payload, signature = token.split(".")
    body = json.loads(_unb64(payload))
    body.update(changes)
    return ".".join((header, _b64(json.dumps(body, separators=(",", ":")).encode()), signature))


def payload_of(token: str) -> dict[str, Any]:
    return json.loads(_unb64(token.split(".")[1]))
