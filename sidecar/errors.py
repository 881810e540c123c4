"""The sidecar's error hierarchy.

Every error has a stable ``code`` (Dapr-style ``ERR_*`` where Dapr has one) and an HTTP status
hint, so listeners answer any of them as ``{"errorCode": code, "message": str(exc)}`` without a
lookup table. ``ResourceInvalid`` carries the location of the offending field (a dotted path such
as ``spec.accessControl.policies[1].appId``) so the YAML loader can add the line number.
"""

from __future__ import annotations


class SidecarError(Exception):
    code = "ERR_SIDECAR"
    http_status = 500


class PolicyError(SidecarError):
    """A policy could not be built or evaluated; evaluation errors always deny."""

    code = "ERR_POLICY"
    http_status = 403


class ResourceInvalid(PolicyError):
    """A resource document (Configuration, Component, MCPServerAccessPolicy…) is invalid."""

    code = "ERR_RESOURCE_INVALID"
    http_status = 400

    def __init__(self, message: str, location: str = "") -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.reason = message
        self.location = location
