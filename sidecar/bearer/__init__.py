"""OAuth 2.0 bearer tokens for the inbound pipeline — the pure part, no sockets, no clocks.

``parse_bearer_component`` reads a Dapr ``middleware.http.bearer`` Component; ``discovery_url`` /
``parse_discovery_document`` find the JWKS; ``JwksCache`` decides when to fetch it and holds the
``JwksSnapshot``; ``check_bearer`` turns request headers into a ``Decision`` (401/503 with an
RFC 6750 challenge) and ``scope_decision`` adds the 403 step-up; ``app_identity_headers`` and
``strip_client_credentials`` keep the token away from the app. ``JwksSource`` (``fetcher.py``,
the one module here with sockets and a clock) wraps ``JwksCache``: discovery, fetches, refreshes.
"""

from .cache import FetchState, JwksCache, KeysUnavailable
from .challenge import bearer_challenge, description_text, quoted_string
from .claims import (
    check_audience,
    check_expiry,
    check_issued_at,
    check_issuer,
    check_not_before,
    scopes_of,
    subject_of,
)
from .config import (
    ALLOWED_ALGORITHMS,
    COMPONENT_TYPE,
    BearerConfig,
    parse_bearer_component,
    parse_duration,
)
from .decision import bearer_token, check_bearer, refresh_may_help, scope_decision
from .discovery import discovery_url, parse_discovery_document
from .errors import (
    KID_UNKNOWN,
    REASONS,
    BearerConfigInvalid,
    DiscoveryInvalid,
    JwksCacheMisuse,
    JwksInvalid,
    TokenRejected,
)
from .fetcher import FetchError, FetchResult, HttpsGetter, JwksSource, cache_control_max_age
from .identity_headers import (
    ISSUER_HEADER,
    SCOPES_HEADER,
    STRIPPED_REQUEST_HEADERS,
    SUBJECT_HEADER,
    app_identity_headers,
    must_strip,
    strip_client_credentials,
)
from .jwks import JwkEntry, JwksSnapshot, parse_jwks
from .metadata import (
    WELL_KNOWN_PRM,
    protected_resource_metadata,
    protected_resource_metadata_paths,
    protected_resource_metadata_url,
    resource_metadata_url_for,
)
from .validate import VerifiedToken, unverified_kid, validate_token

__all__ = [
    "ALLOWED_ALGORITHMS",
    "COMPONENT_TYPE",
    "ISSUER_HEADER",
    "KID_UNKNOWN",
    "REASONS",
    "SCOPES_HEADER",
    "STRIPPED_REQUEST_HEADERS",
    "SUBJECT_HEADER",
    "WELL_KNOWN_PRM",
    "BearerConfig",
    "BearerConfigInvalid",
    "DiscoveryInvalid",
    "FetchError",
    "FetchResult",
    "FetchState",
    "HttpsGetter",
    "JwkEntry",
    "JwksCache",
    "JwksCacheMisuse",
    "JwksInvalid",
    "JwksSnapshot",
    "JwksSource",
    "KeysUnavailable",
    "TokenRejected",
    "VerifiedToken",
    "app_identity_headers",
    "bearer_challenge",
    "bearer_token",
    "cache_control_max_age",
    "check_audience",
    "check_bearer",
    "check_expiry",
    "check_issued_at",
    "check_issuer",
    "check_not_before",
    "description_text",
    "discovery_url",
    "must_strip",
    "parse_bearer_component",
    "parse_discovery_document",
    "parse_duration",
    "parse_jwks",
    "protected_resource_metadata",
    "protected_resource_metadata_paths",
    "protected_resource_metadata_url",
    "quoted_string",
    "refresh_may_help",
    "resource_metadata_url_for",
    "scope_decision",
    "scopes_of",
    "strip_client_credentials",
    "subject_of",
    "unverified_kid",
    "validate_token",
]
