"""OpenID Connect discovery, the pure half: which URL to GET, and what to accept from it.

When a component names no ``jwksURL``, Dapr's bearer middleware GETs
``<issuer without trailing />/.well-known/openid-configuration`` and takes ``jwks_uri`` from it,
but only if the document's ``issuer`` equals the configured issuer **exactly** (OIDC Discovery
§4.3; no slash trimming, no case folding). That equality is what stops a document served for one
tenant of a multi-tenant IdP from handing us the keys of another.
"""

from __future__ import annotations

from ._json import loads_object
from ._urls import check_url
from .errors import DiscoveryInvalid

WELL_KNOWN_OPENID = "/.well-known/openid-configuration"


def discovery_url(issuer: str) -> str:
    """Where the issuer's OpenID configuration lives (one trailing slash removed, as Dapr does)."""
    return issuer.removesuffix("/") + WELL_KNOWN_OPENID


def parse_discovery_document(body: bytes, expected_issuer: str) -> str:
    """Return the ``jwks_uri`` of a discovery document, or raise ``DiscoveryInvalid``."""
    where = discovery_url(expected_issuer)
    try:
        doc = loads_object(body)
    except ValueError as exc:
        raise DiscoveryInvalid(f"{where}: {exc}") from exc
    issuer = doc.get("issuer")
    if issuer != expected_issuer:
        # Name the configured issuer only; the document's value is foreign data and may be long.
        raise DiscoveryInvalid(f"{where}: the document's issuer is not exactly {expected_issuer!r}")
    jwks_uri = doc.get("jwks_uri")
    if jwks_uri is None:
        raise DiscoveryInvalid(f"{where}: the document has no jwks_uri")
    try:
        return check_url(jwks_uri)
    except ValueError as exc:
        raise DiscoveryInvalid(f"{where}: jwks_uri {exc}") from exc
