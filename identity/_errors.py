"""One error hierarchy for everything identity-related.

Each error carries a stable ``code`` (for logs, JSON bodies and tests) and an HTTP status hint,
so the trio code that catches one can answer without a lookup table of its own.
"""

from __future__ import annotations


class IdentityError(Exception):
    """Base of every error raised by :mod:`identity`."""

    code = "IDENTITY_ERROR"
    http_status = 400


class InvalidSpiffeId(IdentityError):
    """A string is not a SPIFFE ID; the message names the rule it broke."""

    code = "INVALID_SPIFFE_ID"


class NotAnAppIdentity(IdentityError):
    """A valid SPIFFE ID that is not of the form ``spiffe://<td>/ns/<ns>/<app-id>``."""

    code = "NOT_AN_APP_IDENTITY"


class SvidError(IdentityError):
    """An X.509-SVID or trust bundle could not be read, written or trusted."""

    code = "SVID_ERROR"
    http_status = 500


class PeerIdentityError(IdentityError):
    """The peer's certificate does not carry an acceptable App identity."""

    code = "PEER_IDENTITY_REJECTED"
    http_status = 403


class PeerIdentityMismatch(PeerIdentityError):
    """The peer proved an identity, but not the one the caller expected."""

    code = "PEER_IDENTITY_MISMATCH"
    http_status = 502
