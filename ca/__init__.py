"""The bundled certificate authority of trustmesh.

Signing lives in ``_authority``; the state directory in :mod:`ca.home`; files in :mod:`ca.store`;
join tokens in :mod:`ca.tokens`; the HTTPS signing service in :mod:`ca.service` (decisions) and
:mod:`ca.server` (trio); the sidecar's side in :mod:`ca.client`. Import those modules directly:
this package re-exports only the signing core and the errors.
"""

from ._duration import parse_duration
from ._errors import (
    BodyTooLarge,
    CAAlreadyExists,
    CABadResponse,
    CAClientError,
    CAError,
    CAIdentityRejected,
    CANotInitialised,
    CARefused,
    CAStorageError,
    CAUnreachable,
    CSRSignatureInvalid,
    InvalidCSR,
    InvalidDuration,
    MethodNotAllowed,
    NotFound,
    RequestRefused,
    RequestTimeout,
    ReservedIdentity,
    SigningRefused,
    TokenExpired,
    TokenInvalid,
    TokenUsed,
    Unauthenticated,
    WeakKey,
)

# The signing core imports ``cryptography`` (~10 MiB resident); a sidecar that only needs the
# errors or ``ca.home`` must not pay for it, so its names load on first use (PEP 562).
_AUTHORITY_NAMES = frozenset(
    {
        "CA_SERVER_APP_ID",
        "CLOCK_SKEW",
        "CONTROL_PLANE_NAMESPACE",
        "DEFAULT_CA_TTL",
        "DEFAULT_LEAF_TTL",
        "CertificateAuthority",
        "ca_server_identity",
        "check_public_key_strength",
        "check_workload_identity",
        "new_private_key",
        "root_trust_domain",
    }
)


def __getattr__(name: str):
    if name in _AUTHORITY_NAMES:
        from . import _authority

        return getattr(_authority, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CA_SERVER_APP_ID",
    "CLOCK_SKEW",
    "CONTROL_PLANE_NAMESPACE",
    "DEFAULT_CA_TTL",
    "DEFAULT_LEAF_TTL",
    "BodyTooLarge",
    "CAAlreadyExists",
    "CABadResponse",
    "CAClientError",
    "CAError",
    "CAIdentityRejected",
    "CANotInitialised",
    "CARefused",
    "CAStorageError",
    "CAUnreachable",
    "CSRSignatureInvalid",
    "CertificateAuthority",
    "InvalidCSR",
    "InvalidDuration",
    "MethodNotAllowed",
    "NotFound",
    "RequestRefused",
    "RequestTimeout",
    "ReservedIdentity",
    "SigningRefused",
    "TokenExpired",
    "TokenInvalid",
    "TokenUsed",
    "Unauthenticated",
    "WeakKey",
    "ca_server_identity",
    "check_public_key_strength",
    "check_workload_identity",
    "new_private_key",
    "parse_duration",
    "root_trust_domain",
]
