"""``WWW-Authenticate: Bearer …`` challenges that cannot be used to inject headers.

RFC 6750 §3 defines the parameters (``realm``, ``scope``, ``error``, ``error_description``,
``error_uri``) and RFC 9728 §5.1 adds ``resource_metadata``. Values are quoted-strings
(RFC 9110 §5.6.4). The grammars are narrower than what can reach us, so every value is forced into
its grammar here, whatever its source:

* ``error_description`` (RFC 6750: ``%x20-21 / %x23-5B / %x5D-7E``) cannot hold ``"`` or ``\\``
  even escaped: any character outside that set becomes ``?``.
* ``scope`` is space-separated scope-tokens (RFC 6749 §3.3); a value that is not one is dropped.
* ``realm`` and ``resource_metadata`` are quoted-strings: ``"`` and ``\\`` are backslash-escaped,
  and controls (CR, LF, NUL, DEL…) and non-ASCII become ``?``.

The bearer layer only ever passes fixed descriptions (``errors.REASONS``), so the escaping is a
second wall, not the first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .claims import SCOPE_TOKEN

OAUTH_ERRORS = frozenset({"invalid_request", "invalid_token", "insufficient_scope"})

_NOT_DESCRIPTION_CHAR = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_NOT_QUOTABLE_CHAR = re.compile(r"[^\x20-\x7e]")  # HTAB is legal but pointless; drop it too


def quoted_string(value: str) -> str:
    """``value`` as an RFC 9110 quoted-string, with anything unsafe replaced by ``?``."""
    safe = _NOT_QUOTABLE_CHAR.sub("?", value)
    return '"' + safe.replace("\\", "\\\\").replace('"', '\\"') + '"'


def description_text(value: str) -> str:
    """``value`` restricted to RFC 6750's error_description characters."""
    return _NOT_DESCRIPTION_CHAR.sub("?", value)


def scope_text(scopes: Iterable[str]) -> str:
    """Scope-tokens joined by single spaces, in order, without repeats or invalid tokens."""
    kept = [s for s in scopes if isinstance(s, str) and SCOPE_TOKEN.fullmatch(s)]
    return " ".join(dict.fromkeys(kept))


def bearer_challenge(
    *,
    realm: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
    scope: Iterable[str] = (),
    resource_metadata: str | None = None,
) -> str:
    """The value of a ``WWW-Authenticate`` header for the Bearer scheme.

    Parameters appear in one fixed order: realm, error, error_description, scope,
    resource_metadata. RFC 6750 §3.1: with no credentials in the request, pass no ``error``.
    """
    if error is not None and error not in OAUTH_ERRORS:
        raise ValueError(f"{error!r} is not an RFC 6750 error code")
    params: list[str] = []
    if realm:
        params.append(f"realm={quoted_string(realm)}")
    if error is not None:
        params.append(f'error="{error}"')
        if error_description:
            params.append(f'error_description="{description_text(error_description)}"')
    scopes = scope_text(scope)
    if scopes:
        params.append(f'scope="{scopes}"')
    if resource_metadata:
        params.append(f"resource_metadata={quoted_string(resource_metadata)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"
