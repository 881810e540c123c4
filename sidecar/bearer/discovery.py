"""OpenID Connect discovery, the pure half: which URL to GET, and what to accept from it.

When a component names no ``jwksURL``, Dapr's bearer middleware GETs
``<issuer without trailing />/.well-known/openid-configuration`` and takes ``jwks_uri`` from it,
but only if the document's ``issuer`` equals the configured issuer **exactly** (OIDC Discovery
§4.3; no slash trimming, no case folding). That equality is what stops a document served for one
tenant of a multi-tenant IdP from handing us the keys of another.

We also require ``jwks_uri`` to be on the issuer's own origin (scheme, host and port) unless the
component sets ``allowForeignJwksHost: "true"``: a discovery document that is wrong, or answered
by something other than the issuer, must not send the sidecar to fetch "keys" from any host it
can reach (another port on loopback, a metadata service, an internal name). Providers that do
publish keys elsewhere (Google: accounts.google.com → www.googleapis.com) need the option.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ._json import loads_object
from ._urls import check_url
from .errors import DiscoveryInvalid

WELL_KNOWN_OPENID = "/.well-known/openid-configuration"


def discovery_url(issuer: str) -> str:
    """Where the issuer's OpenID configuration lives (one trailing slash removed, as Dapr does)."""
    return issuer.removesuffix("/") + WELL_KNOWN_OPENID


def parse_discovery_document(
    body: bytes, expected_issuer: str, *, allow_foreign_host: bool = False
) -> str:
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
        check_url(jwks_uri)
    except ValueError as exc:
        raise DiscoveryInvalid(f"{where}: jwks_uri {exc}") from exc
    if not allow_foreign_host and origin(jwks_uri) != origin(expected_issuer):
        scheme, host, port = origin(expected_issuer)
        raise DiscoveryInvalid(
            f"{where}: jwks_uri is not on the issuer's origin {scheme}://{host}:{port} "
            '(set allowForeignJwksHost: "true" on the component if the provider publishes '
            "its keys elsewhere)"
        )
    return jwks_uri


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL ``check_url`` accepted, with the scheme's default port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or (443 if scheme == "https" else 80)
