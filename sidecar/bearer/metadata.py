"""RFC 9728 OAuth 2.0 Protected Resource Metadata, which MCP servers MUST serve (2025-06-18).

An MCP client that gets a 401 reads ``resource_metadata`` from the challenge, or else tries the
well-known URIs (MCP 2025-11-25, SEP-985): first the path-suffixed form, then the root. RFC 9728
§3.1 builds the well-known URI by inserting ``/.well-known/oauth-protected-resource`` between the
host and the path of the resource identifier, so the resource ``https://h/mcp`` is described at
``https://h/.well-known/oauth-protected-resource/mcp``.

Without a configured ``resource`` (or an audience that is a URL), an MCP server's resource is the
URL its caller used, derived per request (``invoked.py``): the caller's sidecar states it, the
document is served through the same invocation path (``…/method/.well-known/oauth-protected-
resource/<endpoint>``), and the challenge's ``resource_metadata`` points there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from ._urls import check_url
from .claims import SCOPE_TOKEN
from .config import BearerConfig
from .invoked import invoked_base

WELL_KNOWN_PRM = "/.well-known/oauth-protected-resource"


def protected_resource_metadata(
    resource: str, issuer: str, scopes_supported: Iterable[str]
) -> bytes:
    """The PRM JSON document (RFC 9728 §2) for ``resource`` protected by ``issuer``."""
    check_url(resource)
    check_url(issuer, allow_query=False)
    scopes = list(dict.fromkeys(scopes_supported))
    for scope in scopes:
        if not isinstance(scope, str) or not SCOPE_TOKEN.fullmatch(scope):
            raise ValueError(f"{scope!r} is not an RFC 6749 scope-token")
    doc = {
        "resource": resource,
        "authorization_servers": [issuer],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],  # never query or body: MCP forbids them
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def protected_resource_metadata_paths(resource: str) -> tuple[str, ...]:
    """The request paths (with query, if any) to serve the PRM document on, in the order MCP
    clients try them: path-suffixed first, then the root. One path if the resource has none."""
    parts = urlsplit(check_url(resource))
    suffix = parts.path.rstrip("/")
    path = WELL_KNOWN_PRM + suffix + (f"?{parts.query}" if parts.query else "")
    return (path,) if path == WELL_KNOWN_PRM else (path, WELL_KNOWN_PRM)


def protected_resource_metadata_url(resource: str) -> str:
    """The absolute URL of the (path-suffixed) PRM document for ``resource``."""
    parts = urlsplit(check_url(resource))
    path, _, query = protected_resource_metadata_paths(resource)[0].partition("?")
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def resource_metadata_url_for(
    config: BearerConfig,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> str | None:
    """The ``resource_metadata`` URL for challenges: configured, derived from ``resource``, or
    (for an MCP server's ``endpoint``) derived from the URL the caller used."""
    if config.resource_metadata_url:
        return config.resource_metadata_url
    if config.resource:
        return protected_resource_metadata_url(config.resource)
    base = invoked_base(headers) if endpoint and headers is not None else None
    if base is None:
        return None
    return f"{base}{WELL_KNOWN_PRM}/{endpoint}"


def resource_for(
    config: BearerConfig, endpoint: str | None, headers: Mapping[str, str]
) -> str | None:
    """The ``resource`` an RFC 9728 document names: configured, the audience if it is a URL, or
    the URL the caller used for an MCP server's ``endpoint``; None if none can be had."""
    if config.resource:
        return config.resource
    if "://" in config.audience:
        return config.audience
    base = invoked_base(headers) if endpoint else None
    return None if base is None else f"{base}/{endpoint}"


def resource_derivation_warning(config: BearerConfig, endpoint: str | None) -> str | None:
    """Why an app behind ``config`` will serve no RFC 9728 metadata, or None if it will."""
    if config.resource or config.resource_metadata_url or "://" in config.audience or endpoint:
        return None
    return (
        f"bearer component {config.name!r} has no 'resource' and protects an app that is not an "
        "MCP server, so its resource cannot be derived from requests: no RFC 9728 metadata is "
        "served and 401 challenges carry no resource_metadata (set 'resource' to the app's URL)"
    )
