"""The bearer layer in the inbound sidecar: keys, checks, scope step-up and RFC 9728 metadata.

Check order is mTLS identity → ACL → **bearer** → MCP policy: an App ID the ACL allows must also
present a live JWT from a trusted issuer. Keys come from one long-lived :class:`JwksSource` per
bearer component, kept across policy reloads (a reload must not drop a warm key cache), started
when a policy first needs it and refreshed early when a token names an unknown ``kid``.

The token is never passed to the app (MCP forbids token passthrough): ``Authorization`` is
removed and the app gets the verified subject and scopes in ``x-trustmesh-*`` headers, which
the sidecar always strips from what the client sent.

A tool grant may require scopes (``requiredScopes``); a call whose token lacks them gets 403
``insufficient_scope`` so the client can step up. A grant that requires scopes on an app with no
bearer layer denies: a requirement that cannot be checked is not met.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial

import structlog
import trio

from ..bearer import (
    BearerConfig,
    JwksSource,
    VerifiedToken,
    app_identity_headers,
    check_bearer,
    protected_resource_metadata,
    protected_resource_metadata_paths,
    refresh_may_help,
    resource_derivation_warning,
    resource_for,
    resource_metadata_url_for,
    scope_decision,
    unverified_kid,
)
from ..bearer.decision import bearer_token
from ..mcp import required_scopes
from ..pipeline import InboundPolicy, InboundRequest, McpRoute
from ..policy import Decision

log = structlog.get_logger("trustmesh.bearer")

WELL_KNOWN = ".well-known/oauth-protected-resource"


# How long a new policy waits, at most, for the first attempt to fetch the keys of a bearer
# component it brings (the fetch itself is bounded by the source's own, longer, timeout).
WARM_TIMEOUT = 5.0


class _FirstAttempt:
    """The ``task_status`` a source's ``run`` reports its first fetch attempt to."""

    def __init__(self) -> None:
        self.done = trio.Event()

    def started(self, _value=None) -> None:
        self.done.set()


class BearerKeySources:
    """One JWKS source per bearer configuration, started on first use, kept for the process."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._sources: dict[BearerConfig, JwksSource] = {}
        self._first: dict[BearerConfig, trio.Event] = {}

    def ensure(self, config: BearerConfig) -> JwksSource:
        source = self._sources.get(config)
        if source is None:
            source = self._sources[config] = JwksSource(config)
            first = _FirstAttempt()
            self._first[config] = first.done
            self._nursery.start_soon(partial(source.run, task_status=first))
            log.info("jwks source started", component=config.name, issuer=config.issuer)
        return source

    async def warm(self, config: BearerConfig, timeout: float = WARM_TIMEOUT) -> None:
        """Start the source of ``config`` if new, and wait (at most ``timeout``) for its first
        fetch attempt: a policy put in force before would judge every token, and every
        exchange under way that it judges again, against no keys at all."""
        self.ensure(config)
        with trio.move_on_after(timeout):
            await self._first[config].wait()

    def on_policy(self, policy: InboundPolicy) -> None:
        if policy.bearer is not None:
            self.ensure(policy.bearer)
            warning = resource_derivation_warning(policy.bearer, _endpoint(policy))
            if warning is not None:
                log.warning(warning, component=policy.bearer.name)


def _endpoint(policy: InboundPolicy) -> str | None:
    return policy.mcp.method if policy.mcp is not None else None


def _realm(policy: InboundPolicy, request: InboundRequest) -> str:
    return request.callee.app_id


def metadata_response(policy: InboundPolicy, request: InboundRequest) -> bytes | None:
    """The RFC 9728 document if this is a GET for one of its well-known paths, else None."""
    config = policy.bearer
    if config is None or request.verb != "GET" or not request.method.startswith(WELL_KNOWN):
        return None
    resource = resource_for(config, _endpoint(policy), request.headers)
    if resource is None:
        return None
    paths = {p.split("?", 1)[0].lstrip("/") for p in protected_resource_metadata_paths(resource)}
    if policy.mcp is not None:
        paths.add(f"{WELL_KNOWN}/{policy.mcp.method}")
    paths.add(WELL_KNOWN)
    if request.method not in paths:
        return None
    scopes = policy.mcp.required_scopes if policy.mcp is not None else ()
    return protected_resource_metadata(resource, config.issuer, scopes)


def check_token(
    sources: BearerKeySources,
    policy: InboundPolicy,
    request: InboundRequest,
    now: float | None = None,
) -> tuple[Decision, VerifiedToken | None]:
    config = policy.bearer
    assert config is not None
    source = sources.ensure(config)
    decision, verified = check_bearer(
        request.headers,
        config=config,
        keys=source.keys(),
        now=time.time() if now is None else now,
        resource_metadata_url=resource_metadata_url_for(config, _endpoint(policy), request.headers),
        realm=_realm(policy, request),
        scope_hint=policy.mcp.required_scopes if policy.mcp is not None else (),
    )
    if refresh_may_help(decision):
        token = bearer_token(request.headers.get("authorization", "")) or ""
        kid = unverified_kid(token)
        if kid is not None:
            source.request_refresh(kid)
    return decision, verified


def check_scopes(
    policy: InboundPolicy,
    route: McpRoute,
    request: InboundRequest,
    items: Iterable[tuple[str, str]],
    verified: VerifiedToken | None,
) -> Decision | None:
    """A denial if a granted item (from the request's inspection) needs scopes the token lacks,
    or that cannot be checked because no bearer layer is attached."""
    config = policy.bearer
    for capability, name in items:
        needed = required_scopes(route.policy, request.caller, capability, name)
        if not needed:
            continue
        if verified is None:
            message = (
                f"{capability} item {name!r} requires OAuth scopes {list(needed)} but no bearer "
                f"component is attached to {request.callee.app_id}"
            )
            return Decision.deny("bearer", "scopes_uncheckable", message, 403)
        decision = scope_decision(
            verified,
            needed,
            resource_metadata_url=(
                resource_metadata_url_for(config, _endpoint(policy), request.headers)
                if config
                else None
            ),
            realm=request.callee.app_id,
        )
        if not decision.allowed:
            return decision
    return None


def app_headers(verified: VerifiedToken | None) -> list[tuple[bytes, bytes]]:
    if verified is None:
        return []
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in app_identity_headers(verified)]
