"""The CA's error hierarchy: each error has a stable code and an HTTP status hint."""

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


class SigningRefused(CAError):
    """A request to sign is well-formed but must not be honoured (wrong domain, weak key…)."""

    code = "SIGNING_REFUSED"
    http_status = 400
