"""Errors of the bearer layer, and the one table of reasons a token is refused.

Every refusal carries a stable ``reason_code`` (what the audit log and the JSON body name) and a
description taken from ``REASONS`` — a fixed string written here, never built from the token. That
is what keeps attacker-chosen bytes (a ``kid``, an ``iss``, a garbage header) out of the
``WWW-Authenticate`` header and the response body: there is nothing to escape because nothing of
theirs is echoed. (The challenge builder escapes anyway; see ``challenge.py``.)
"""

from __future__ import annotations

from sidecar.errors import PolicyError, ResourceInvalid

# reason_code → description. RFC 6750 §3 limits error_description to %x20-21 / %x23-5B / %x5D-7E,
# so these strings hold no quote, no backslash and no non-ASCII character (a test checks it).
REASONS: dict[str, str] = {
    "authorization_not_bearer": "The Authorization header does not hold one Bearer token",
    "malformed_token": "The access token is not a well-formed JWS compact JWT",
    "algorithm_not_allowed": "The token alg is not in the allowed asymmetric algorithm list",
    "token_type_invalid": "The token typ is not the required access token type",
    "kid_missing": "The token header has no kid",
    "kid_unknown": "No key in the issuer JWKS has the token kid",
    "kid_ambiguous": "The issuer JWKS holds more than one key with the token kid",
    "key_type_mismatch": "The key named by kid does not fit the token alg",
    "key_use_not_sig": "The key named by kid is not meant for signatures",
    "key_alg_mismatch": "The key named by kid is bound to a different alg",
    "signature_invalid": "The token signature does not verify",
    "issuer_mismatch": "The token iss is not the configured issuer",
    "audience_mismatch": "The token aud does not contain the configured audience",
    "exp_missing": "The token has no exp claim",
    "token_expired": "The token has expired",
    "token_not_yet_valid": "The token is not valid yet (nbf)",
    "iat_in_future": "The token was issued in the future (iat)",
    "subject_invalid": "The token sub claim is missing or not printable ASCII",
    "claim_invalid": "A registered claim of the token has the wrong type",
    "scope_invalid": "The token scope or scp claim is not a list of scope tokens",
}

# The one refusal that a JWKS refresh can cure (key rotation): see JwksCache.on_unknown_kid.
KID_UNKNOWN = "kid_unknown"


class BearerConfigInvalid(ResourceInvalid):
    """A ``middleware.http.bearer`` Component cannot be used."""

    code = "ERR_BEARER_COMPONENT_INVALID"


class DiscoveryInvalid(PolicyError):
    """The issuer's OpenID configuration document cannot be used; the component fails to load."""

    code = "ERR_BEARER_DISCOVERY"
    http_status = 503


class JwksInvalid(PolicyError):
    """A JWKS document holds no usable signing key; the cache keeps its previous keys."""

    code = "ERR_BEARER_JWKS"
    http_status = 503


class JwksCacheMisuse(PolicyError):
    """The fetcher drove the JWKS state machine through a move it does not allow (our bug)."""

    code = "ERR_BEARER_JWKS_STATE"
    http_status = 500


class TokenRejected(PolicyError):
    """The presented bearer token is refused; ``reason_code`` names the check that failed."""

    code = "ERR_BEARER_TOKEN_REJECTED"
    http_status = 401

    def __init__(self, reason_code: str, description: str | None = None) -> None:
        if reason_code not in REASONS:
            raise ValueError(f"unknown bearer reason code {reason_code!r}")
        self.reason_code = reason_code
        self.description = description if description is not None else REASONS[reason_code]
        super().__init__(f"{reason_code}: {self.description}")

    @property
    def refresh_may_help(self) -> bool:
        """True only for an unknown ``kid``: the issuer may have rotated its keys."""
        return self.reason_code == KID_UNKNOWN
