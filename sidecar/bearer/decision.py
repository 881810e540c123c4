"""The bearer layer's pure check: request headers in, a ``Decision`` out.

Answers, following RFC 6750 §3 and the MCP authorization spec (2025-06-18, 2025-11-25):

* no ``Authorization`` header → **401** ``WWW-Authenticate: Bearer realm=…, resource_metadata=…``
  with no ``error`` attribute (RFC 6750 §3.1: the client may not know auth is needed);
* a header that is not one Bearer token, or a token that fails any check → **401**
  ``error="invalid_token"`` with a fixed ``error_description`` and a JSON body naming the check;
* a token but no signing keys ever fetched → **503** naming the JWKS URL (the issuer is down or
  misconfigured; the client cannot fix that by re-authenticating);
* a valid token lacking a scope the operation needs (``scope_decision``) → **403**
  ``error="insufficient_scope", scope="…"`` so the client can step up (MCP 2025-11-25).

``resource_metadata`` (RFC 9728 §5.1) is added whenever a URL is given: MCP clients find the
authorization server through it. Unlike Dapr's middleware (bare ``401 Unauthorized``), every
denial says which check failed — by a fixed reason code, never by echoing the token.

Headers arrive as a mapping of lower-case names. If a client sent ``Authorization`` more than
once, the caller must join the values with ``", "`` (RFC 9110 §5.3), which is then refused as
not one Bearer token — never pick one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from sidecar.policy.decision import Decision

from .cache import KeysUnavailable
from .challenge import bearer_challenge, scope_text
from .config import BearerConfig
from .discovery import discovery_url
from .errors import KID_UNKNOWN, REASONS, TokenRejected
from .jwks import JwksSnapshot
from .validate import VerifiedToken, validate_token

LAYER = "bearer"
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive (RFC 9110).
_BEARER_CREDENTIALS = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*)")


def bearer_token(authorization: str) -> str | None:
    """The token in an ``Authorization`` value, or None if it is not ``Bearer <b64token>``."""
    match = _BEARER_CREDENTIALS.fullmatch(authorization.strip(" \t"))
    return match.group(1) if match else None


def check_bearer(
    headers: Mapping[str, str],
    *,
    config: BearerConfig,
    keys: JwksSnapshot | KeysUnavailable | None,
    now: float,
    resource_metadata_url: str | None,
    realm: str,
    scope_hint: Iterable[str] = (),
) -> tuple[Decision, VerifiedToken | None]:
    """Decide the bearer layer for one request; on allow, also return what the token proved.

    ``scope_hint`` (optional) lists the scopes to name in a 401 challenge (MCP: SHOULD).
    """
    authorization = headers.get("authorization")
    if authorization is None or not authorization.strip(" \t"):
        return _missing_token(realm, resource_metadata_url, scope_hint), None
    token = bearer_token(authorization)
    if token is None:
        rejection = TokenRejected("authorization_not_bearer")
        return _invalid_token(rejection, realm, resource_metadata_url, scope_hint), None
    if not isinstance(keys, JwksSnapshot):
        return _keys_unavailable(config, keys), None
    try:
        verified = validate_token(token, config=config, keys=keys, now=now)
    except TokenRejected as rejection:
        return _invalid_token(rejection, realm, resource_metadata_url, scope_hint), None
    allow = Decision.allow(
        LAYER,
        "token_valid",
        f"bearer token of subject {verified.subject!r} verified with key {verified.key_id!r}",
        rule=f"component {config.name}",
    )
    return allow, verified


def scope_decision(
    verified: VerifiedToken,
    required_scopes: Iterable[str],
    *,
    resource_metadata_url: str | None = None,
    realm: str | None = None,
) -> Decision:
    """Allow if the token holds every required scope, else 403 ``insufficient_scope``.

    The challenge's ``scope`` lists all the scopes the operation requires (not only the missing
    ones): that is what the client must ask for when it steps up.
    """
    required = list(dict.fromkeys(required_scopes))
    missing = [s for s in required if s not in verified.scopes]
    if not missing:
        return Decision.allow(LAYER, "scope_granted", "the token holds every required scope")
    description = "The token lacks a scope this request requires"
    challenge = bearer_challenge(
        realm=realm,
        error="insufficient_scope",
        error_description=description,
        scope=required,
        resource_metadata=resource_metadata_url,
    )
    body = {
        "errorCode": "insufficient_scope",
        "check": "scope",
        "message": description,
        "requiredScopes": scope_text(required).split(" "),
        "missingScopes": scope_text(missing).split(" "),
    }
    return Decision.deny(
        LAYER,
        "insufficient_scope",
        f"subject {verified.subject!r} lacks scopes {scope_text(missing)!r}",
        status=403,
        rule="scope",
        headers=(("WWW-Authenticate", challenge),),
        body=json.dumps(body).encode(),
    )


def refresh_may_help(decision: Decision) -> bool:
    """True if the denial was an unknown ``kid``: call ``JwksCache.on_unknown_kid``."""
    return not decision.allowed and decision.layer == LAYER and decision.rule == KID_UNKNOWN


def _missing_token(
    realm: str, resource_metadata_url: str | None, scope_hint: Iterable[str]
) -> Decision:
    challenge = bearer_challenge(
        realm=realm, scope=scope_hint, resource_metadata=resource_metadata_url
    )
    message = "This request needs an Authorization: Bearer token"
    body = {"errorCode": "missing_token", "check": "authorization_missing", "message": message}
    return Decision.deny(
        LAYER,
        "missing_token",
        message,
        status=401,
        rule="authorization_missing",
        headers=(("WWW-Authenticate", challenge),),
        body=json.dumps(body).encode(),
    )


def _invalid_token(
    rejection: TokenRejected,
    realm: str,
    resource_metadata_url: str | None,
    scope_hint: Iterable[str],
) -> Decision:
    description = REASONS[rejection.reason_code]  # fixed text: never echo token contents
    challenge = bearer_challenge(
        realm=realm,
        error="invalid_token",
        error_description=description,
        scope=scope_hint,
        resource_metadata=resource_metadata_url,
    )
    body = {"errorCode": "invalid_token", "check": rejection.reason_code, "message": description}
    return Decision.deny(
        LAYER,
        "invalid_token",
        f"bearer token refused: {rejection.description}",
        status=401,
        rule=rejection.reason_code,
        headers=(("WWW-Authenticate", challenge),),
        body=json.dumps(body).encode(),
    )


def _keys_unavailable(config: BearerConfig, keys: KeysUnavailable | None) -> Decision:
    url = keys.jwks_url if keys is not None else config.jwks_url or discovery_url(config.issuer)
    public = f"No signing keys are available from {url}; the token cannot be checked"
    detail = f" (last error: {keys.error})" if keys is not None and keys.error else ""
    body = {"errorCode": "jwks_unavailable", "check": "jwks", "message": public}
    return Decision.deny(
        LAYER,
        "jwks_unavailable",
        public + detail,
        status=503,
        rule="jwks",
        body=json.dumps(body).encode(),
    )
