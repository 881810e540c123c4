"""From a store snapshot to the one :class:`InboundPolicy` a sidecar enforces. Pure.

Which configuration applies: the sidecar's ``--config`` (a name in the store, or a file) if
given, else the one bound to the App ID (``trustmesh appid update ID --app-config NAME``), else
none — and no configuration means every authenticated caller in the mesh is allowed, as in Dapr.
A reference to a configuration or component that does not exist is an error, never "no policy":
the watcher then keeps the last good policy, or, with none yet, denies everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from identity import AppIdentity

from ..errors import PolicyError, ResourceInvalid, SidecarError
from ..http.path import normalize_method
from ..mcp import MCPServerAccessPolicy, parse_policy
from ..pipeline import InboundPolicy, InboundRequest, McpRoute
from ..policy import Decision
from ..policy.acl import AccessControl, evaluate_acl
from ..policy.configuration import parse_configuration
from .store import Snapshot

BEARER_TYPE = "middleware.http.bearer"


class PolicyUnavailable(PolicyError):
    code = "ERR_POLICY_UNAVAILABLE"
    http_status = 503


@dataclass(frozen=True)
class ConfigOverride:
    """``--config``: a configuration name in the store, or a loaded document from a file."""

    name: str | None = None
    document: Mapping[str, Any] | None = None
    source: str | None = None


def _acl_check(acl: AccessControl | None, request: InboundRequest) -> Decision:
    return evaluate_acl(acl, request.caller, request.method, request.verb)


def build_inbound_policy(
    snapshot: Snapshot, me: AppIdentity, override: ConfigOverride | None = None
) -> InboundPolicy:
    sources: dict[str, str] = {}
    head_checks = []
    bearer = None
    acl = None
    document, label = _configuration_document(snapshot, me, override)
    if document is not None:
        try:
            configuration = parse_configuration(document)
        except ResourceInvalid as exc:
            raise PolicyUnavailable(f"configuration {label} is invalid: {exc}") from exc
        sources["configuration"] = label
        acl = configuration.access_control
        head_checks.append(partial(_acl_check, acl))
        bearer = _bearer(snapshot, me, configuration)
        if bearer is not None:
            sources["bearer"] = f"{bearer.name} (issuer {bearer.issuer})"
    mcp = _mcp_route(snapshot, me)
    if mcp is not None:
        sources["mcpServer"] = f"{mcp.server} at " + ", ".join(f"/{e}" for e in mcp.endpoints)
    return InboundPolicy(
        version=str(snapshot.generation),
        head_checks=tuple(head_checks),
        bearer=bearer,
        mcp=mcp,
        acl=acl,
        strip_headers=frozenset({b"authorization"}) if bearer is not None else frozenset(),
        sources=sources,
    )


def _bearer(snapshot: Snapshot, me: AppIdentity, configuration):
    """The bearer component named by the configuration's pipelines, if any.

    Dapr puts ``middleware.http.bearer`` in ``spec.httpPipeline`` (requests into the sidecar);
    here every request into the app crosses the inbound sidecar, so either pipeline attaches it
    there. A middleware type we do not implement is refused: silently skipping a configured
    security layer would fail open.
    """
    handlers = (*configuration.http_pipeline, *configuration.app_http_pipeline)
    if not handlers:
        return None
    from ..bearer import parse_bearer_component  # pyjwt only for apps that need it

    found = []
    for handler in handlers:
        if handler.type != BEARER_TYPE:
            raise PolicyUnavailable(
                f"configuration {configuration.name!r} names middleware {handler.name!r} of type "
                f"{handler.type!r}, which trustmesh does not implement (only {BEARER_TYPE})"
            )
        document = snapshot.get("Component", handler.name)
        if document is None:
            raise PolicyUnavailable(
                f"component {handler.name!r} named by configuration {configuration.name!r} "
                "does not exist"
            )
        try:
            config = parse_bearer_component(document)
        except ResourceInvalid as exc:
            raise PolicyUnavailable(f"component {handler.name!r} is invalid: {exc}") from exc
        if config.app_scopes and me.app_id not in config.app_scopes:
            raise PolicyUnavailable(
                f"component {handler.name!r} is scoped to {list(config.app_scopes)}, "
                f"not to {me.app_id}"
            )
        if config not in found:
            found.append(config)
    if len(found) > 1:
        raise PolicyUnavailable(
            f"configuration {configuration.name!r} attaches {len(found)} bearer components; use one"
        )
    return found[0] if found else None


def _mcp_route(snapshot: Snapshot, me: AppIdentity) -> McpRoute | None:
    """The MCP route of an App ID registered as an MCP server; a missing policy is deny-all."""
    binding = snapshot.binding
    if binding is None or binding.mcp_server is None:
        return None
    endpoints = mcp_endpoints(binding.mcp_server)
    name = me.app_id
    document = snapshot.get("MCPServerAccessPolicy", name)
    if document is None:
        return McpRoute(endpoints, MCPServerAccessPolicy.deny_all(name), name)
    try:
        policy = parse_policy(document, server_namespace=me.namespace)
    except ResourceInvalid as exc:
        raise PolicyUnavailable(f"MCPServerAccessPolicy {name!r} is invalid: {exc}") from exc
    return McpRoute(endpoints, policy, name)


def mcp_endpoints(registration: Mapping[str, Any]) -> tuple[str, ...]:
    """The endpoints of an MCP server registration, normalised (no leading slash).

    ``{"paths": ["/mcp", "/v2/mcp"]}`` lists several; ``{"path": "/mcp"}`` (the single-endpoint
    form, also what older state files hold) names one; neither means ``/mcp``.
    """
    raw = registration.get("paths")
    if raw is None:
        raw = registration.get("path", "/mcp")
    paths = [raw] if isinstance(raw, str) else raw
    if not isinstance(paths, list | tuple) or not paths:
        raise PolicyUnavailable(f"MCP server paths {raw!r} must be a path or a non-empty list")
    endpoints = []
    for path in paths:
        if not isinstance(path, str):
            raise PolicyUnavailable(f"MCP server path {path!r} is not a string")
        try:
            endpoints.append(normalize_method(path.lstrip("/")))
        except SidecarError as exc:
            raise PolicyUnavailable(f"MCP server path {path!r} is invalid: {exc}") from exc
    return tuple(endpoints)


def _configuration_document(
    snapshot: Snapshot, me: AppIdentity, override: ConfigOverride | None
) -> tuple[Mapping[str, Any] | None, str]:
    if override is not None and override.document is not None:
        return override.document, f"file {override.source}"
    name = override.name if override is not None else None
    if name is None and snapshot.binding is not None:
        name = snapshot.binding.configuration
    if name is None:
        return None, ""
    document = snapshot.get("Configuration", name)
    if document is None:
        raise PolicyUnavailable(f"configuration {name!r} attached to {me.app_id} does not exist")
    return document, repr(name)


def deny_all_policy(reason: str) -> InboundPolicy:
    """Fail closed: what a sidecar enforces before it has ever had a valid policy."""
    decision = Decision.deny("policy", PolicyUnavailable.code, f"no valid policy: {reason}", 503)
    return InboundPolicy(version="invalid", head_checks=(lambda _request: decision,))
