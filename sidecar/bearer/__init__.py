"""OAuth 2.0 bearer tokens for the inbound pipeline — the pure part, no sockets, no clocks.

``parse_bearer_component`` reads a Dapr ``middleware.http.bearer`` Component; ``discovery_url`` /
``parse_discovery_document`` find the JWKS; ``JwksCache`` decides when to fetch it and holds the
``JwksSnapshot``; ``check_bearer`` turns request headers into a ``Decision`` (401/503 with an
RFC 6750 challenge) and ``scope_decision`` adds the 403 step-up; ``app_identity_headers`` and
``strip_client_credentials`` keep the token away from the app. ``JwksSource`` (``fetcher.py``,
the one module here with sockets and a clock) wraps ``JwksCache``: discovery, fetches, refreshes.

Names are loaded on first use (PEP 562): a sidecar without a bearer component never imports
pyjwt, and the outbound proxy can use ``invoked`` without the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_SUBMODULE_OF = {
    "ALLOWED_ALGORITHMS": "config",
    "BearerConfig": "config",
    "BearerConfigInvalid": "errors",
    "COMPONENT_TYPE": "config",
    "DiscoveryInvalid": "errors",
    "FetchError": "fetcher",
    "FetchResult": "fetcher",
    "FetchState": "cache",
    "HttpsGetter": "fetcher",
    "INVOKED_AS_HEADERS": "invoked",
    "ISSUER_HEADER": "identity_headers",
    "JwkEntry": "jwks",
    "JwksCache": "cache",
    "JwksCacheMisuse": "errors",
    "JwksInvalid": "errors",
    "JwksSnapshot": "jwks",
    "JwksSource": "fetcher",
    "KID_UNKNOWN": "errors",
    "KeysUnavailable": "cache",
    "REASONS": "errors",
    "SCOPES_HEADER": "identity_headers",
    "STRIPPED_REQUEST_HEADERS": "identity_headers",
    "SUBJECT_HEADER": "identity_headers",
    "TokenRejected": "errors",
    "VerifiedToken": "validate",
    "WELL_KNOWN_PRM": "metadata",
    "app_identity_headers": "identity_headers",
    "bearer_challenge": "challenge",
    "bearer_token": "decision",
    "cache_control_max_age": "fetcher",
    "check_audience": "claims",
    "check_bearer": "decision",
    "check_expiry": "claims",
    "check_issued_at": "claims",
    "check_issuer": "claims",
    "check_not_before": "claims",
    "description_text": "challenge",
    "discovery_url": "discovery",
    "invoked_as_headers": "invoked",
    "invoked_base": "invoked",
    "must_strip": "identity_headers",
    "parse_bearer_component": "config",
    "parse_discovery_document": "discovery",
    "parse_duration": "config",
    "parse_jwks": "jwks",
    "protected_resource_metadata": "metadata",
    "protected_resource_metadata_paths": "metadata",
    "protected_resource_metadata_url": "metadata",
    "quoted_string": "challenge",
    "refresh_may_help": "decision",
    "resource_derivation_warning": "metadata",
    "resource_for": "metadata",
    "resource_metadata_url_for": "metadata",
    "scope_decision": "decision",
    "scopes_of": "claims",
    "strip_client_credentials": "identity_headers",
    "subject_of": "claims",
    "unverified_kid": "validate",
    "validate_token": "validate",
}

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str) -> Any:
    submodule = _SUBMODULE_OF.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{submodule}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
