"""The bundled certificate authority of trustmesh."""

from ._authority import (
    CLOCK_SKEW,
    DEFAULT_CA_TTL,
    DEFAULT_LEAF_TTL,
    CertificateAuthority,
    check_public_key_strength,
    new_private_key,
)
from ._errors import CAAlreadyExists, CAError, CANotInitialised, CAStorageError, SigningRefused

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_CA_TTL",
    "DEFAULT_LEAF_TTL",
    "CAAlreadyExists",
    "CAError",
    "CANotInitialised",
    "CAStorageError",
    "CertificateAuthority",
    "SigningRefused",
    "check_public_key_strength",
    "new_private_key",
]
