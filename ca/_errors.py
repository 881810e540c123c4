"""The CA's error hierarchy: each error has a stable code and an HTTP status hint.

The signing service answers every refusal as ``{"errorCode": code, "message": str(exc)}`` with
``http_status``, so a new refusal is a new subclass here and nothing else. The client side raises
:class:`CAClientError` subclasses; a refusal carries the server's status and code so callers can
tell "the CA said no" (final) from "the CA could not be reached" (worth a retry).
"""

from __future__ import annotations


class CAError(Exception):
    code = "CA_ERROR"
    http_status = 500


class CANotInitialised(CAError):
    code = "CA_NOT_INITIALISED"


class CAAlreadyExists(CAError):
    code = "CA_EXISTS"
    http_status = 409


class CAStorageError(CAError):
    code = "CA_STORAGE"


class RotationRefused(CAError):
    """A ``ca rotate`` step out of order, or before the previous one reached every sidecar."""

    code = "ROTATION_REFUSED"
    http_status = 409


class InvalidDuration(CAError):
    code = "INVALID_DURATION"
    http_status = 400


class SigningRefused(CAError):
    """A request to sign is well-formed but must not be honoured (wrong domain, weak key…)."""

    code = "SIGNING_REFUSED"
    http_status = 400


class WeakKey(SigningRefused):
    """The public key to be certified is too small, on an unknown curve, or of an odd type."""

    code = "WEAK_KEY"


class ReservedIdentity(SigningRefused):
    """The identity belongs to the mesh's own control plane and is never issued to a workload."""

    code = "RESERVED_IDENTITY"
    http_status = 403


# --- refusals of the signing service -------------------------------------------------------


class RequestRefused(CAError):
    """Base of what the signing service answers with a 4xx."""

    code = "BAD_REQUEST"
    http_status = 400


class InvalidCSR(RequestRefused):
    code = "CSR_MALFORMED"


class CSRSignatureInvalid(RequestRefused):
    code = "CSR_SIGNATURE_INVALID"


class BodyTooLarge(RequestRefused):
    code = "BODY_TOO_LARGE"
    http_status = 413


class RequestTimeout(RequestRefused):
    code = "REQUEST_TIMEOUT"
    http_status = 408


class NotFound(RequestRefused):
    code = "NOT_FOUND"
    http_status = 404


class MethodNotAllowed(RequestRefused):
    code = "METHOD_NOT_ALLOWED"
    http_status = 405

    def __init__(self, message: str, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class Unauthenticated(RequestRefused):
    """No join token and no client certificate, or both at once."""

    code = "UNAUTHENTICATED"
    http_status = 401


class TokenInvalid(Unauthenticated):
    code = "TOKEN_INVALID"


class TokenUsed(Unauthenticated):
    code = "TOKEN_USED"


class TokenExpired(Unauthenticated):
    code = "TOKEN_EXPIRED"


# --- the client side -------------------------------------------------------------------------


class CAClientError(CAError):
    """Talking to the CA failed; the subclass says how."""

    code = "CA_CLIENT_ERROR"
    http_status = 502


class CAUnreachable(CAClientError):
    """No TLS connection to the CA: refused, timed out, or the CA did not prove its identity."""

    code = "CA_UNREACHABLE"
    http_status = 503


class CARefused(CAClientError):
    """The CA answered with an error; ``http_status`` and ``server_code`` are the CA's own."""

    code = "CA_REFUSED"

    def __init__(self, message: str, *, http_status: int, server_code: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.server_code = server_code


class CABadResponse(CAClientError):
    """The CA answered 200 with something that is not a usable SVID or bundle."""

    code = "CA_BAD_RESPONSE"


class CAIdentityRejected(CAClientError):
    """The server answered TLS with a valid certificate, but not the CA's identity."""

    code = "CA_IDENTITY_REJECTED"
