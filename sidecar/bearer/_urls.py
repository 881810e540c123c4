"""Which URLs the bearer layer will talk to or name.

Keys and issuer metadata fetched over plain HTTP can be swapped by anyone on the path, so every
URL must be ``https`` — except on the loopback interface, where a developer's local issuer
(Keycloak in a container, a test IdP) runs without TLS and nothing crosses a network. The loopback
list is exact: ``127.0.0.1``, ``localhost`` and ``[::1]``; ``localhost.example.com`` is not one.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Visible ASCII only: no spaces, controls or non-ASCII that one URL parser would strip and
# another keep (the same differential the path normaliser guards against).
_URL_CHARS = re.compile(r"[\x21-\x7e]+")


def check_url(value: object, *, allow_query: bool = True) -> str:
    """Return ``value`` if it is an absolute https (or loopback http) URL, else raise ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty URL string")
    if not _URL_CHARS.fullmatch(value):
        raise ValueError("must be a URL of visible ASCII characters")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise ValueError(f"must be an https URL, not {scheme or 'a relative'} URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if "@" in parts.netloc:
        raise ValueError("must not carry user information")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    if scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(
            "must use https (plain http is allowed only for 127.0.0.1, localhost and [::1])"
        )
    if parts.fragment or value.endswith("#"):
        raise ValueError("must not have a fragment")
    if not allow_query and (parts.query or value.endswith("?")):
        raise ValueError("must not have a query")
    return value
