"""A throw-away OAuth issuer for bearer tests: keys and tokens made with joserfc, not with pyjwt
and not with the code under test, so a shared misunderstanding cannot make a test pass."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from typing import Any

from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from sidecar.bearer import BearerConfig, JwksSnapshot, parse_jwks

ISSUER = "https://login.example.com/realms/mesh"
AUDIENCE = "mcp-server"
JWKS_URL = "https://login.example.com/realms/mesh/certs"
PRM_URL = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
NOW = 1_800_000_000.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_config(**overrides: Any) -> BearerConfig:
    values: dict[str, Any] = {"name": "bearer", "issuer": ISSUER, "audience": AUDIENCE}
    values.update(overrides)
    return BearerConfig(**values)


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid access-token claims at NOW; pass name=None to drop a claim."""
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": int(NOW) - 10,
        "exp": int(NOW) + 300,
        "scope": "tools:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


class Issuer:
    """Signing keys with kids, published as a JWKS; generate once per test module."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig"})
        self.rsa_next = RSAKey.generate_key(2048, parameters={"kid": "rsa-2", "use": "sig"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
        self.ec384 = ECKey.generate_key("P-384", parameters={"kid": "ec-384"})
        self.ec521 = ECKey.generate_key("P-521", parameters={"kid": "ec-521"})
        self.ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"})

    def jwks(self, *keys: Any, extra: list[dict[str, Any]] | None = None) -> bytes:
        members = [k.as_dict(private=False) for k in (keys or (self.rsa, self.ec, self.ed))]
        return json.dumps({"keys": members + (extra or [])}).encode()

    def snapshot(self, *keys: Any, extra: list[dict[str, Any]] | None = None) -> JwksSnapshot:
        return parse_jwks(self.jwks(*keys, extra=extra), source_url=JWKS_URL, fetched_at=NOW)

    def mint(
        self,
        payload: dict[str, Any] | bytes | None = None,
        *,
        key: Any = None,
        alg: str = "RS256",
        kid: str | None = "",
        header: dict[str, Any] | None = None,
    ) -> str:
        """Sign with joserfc. kid "" means the key's own kid; None leaves kid out."""
        key = key if key is not None else self.rsa
        protected: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if kid == "":
            protected["kid"] = key.kid
        elif kid is not None:
            protected["kid"] = kid
        protected.update(header or {})
        body = payload if isinstance(payload, bytes) else json.dumps(payload or claims()).encode()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SecurityWarning)  # EdDSA is "deprecated" (RFC 9864)
            return jws.serialize_compact(protected, body, key, algorithms=[alg])


def unsigned_token(payload: dict[str, Any], kid: str = "rsa-1") -> str:
    """``alg: none`` via joserfc's own "none" algorithm (it warns; we mean it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jws.serialize_compact(
            {"alg": "none", "kid": kid}, json.dumps(payload).encode(), None, algorithms=["none"]
        )


def hs256_with_public_pem(issuer: Issuer, payload: dict[str, Any]) -> str:
    """The algorithm-confusion forgery: HS256 keyed with the issuer's *public* PEM.

    joserfc refuses to import a public key as an HMAC secret (that refusal is the attack's
    defence), so the header and payload are encoded by joserfc with a throw-away secret and the
    MAC recomputed with the standard library over the same signing input.
    """
    decoy = OctKey.generate_key(256)
    token = jws.serialize_compact(
        {"alg": "HS256", "kid": issuer.rsa.kid}, json.dumps(payload).encode(), decoy, ["HS256"]
    )
    signing_input = token.rsplit(".", 1)[0]
    pem = issuer.rsa.as_pem(private=False)
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def with_payload(token: str, payload: dict[str, Any]) -> str:
    """Swap the payload segment, keeping header and signature: a tampered token."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url(json.dumps(payload).encode())}.{signature}"
