"""The inbound pipeline: an ordered list of pure checks over one request.

peer identity → ACL → bearer → MCP policy. Each check returns a :class:`Decision`; the first
deny wins and the sidecar answers with it, so a denied request never reaches the app. The policy
in force is one immutable :class:`InboundPolicy`, swapped whole on reload. The judge
(:mod:`sidecar.judge`) reads it when the head arrives and again when a body it reads is
complete: whatever is forwarded was judged by the policy in force when it left.

Head checks see the request line and headers; the MCP policy, which needs the body, runs only on
the MCP endpoint of an app registered as an MCP server, after the body was read up to a limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from identity import AppIdentity

from .policy import Decision
from .policy.acl import match_form, operation_allows


@dataclass(frozen=True, slots=True)
class InboundRequest:
    caller: AppIdentity
    callee: AppIdentity
    verb: str  # upper-case HTTP method
    method: str  # the normalised Dapr method (path without leading slash)
    headers: Mapping[str, str]  # lower-case names, repeated values joined with ", "


@dataclass(frozen=True)
class McpRoute:
    """For an App ID registered as an MCP server: its endpoint(s) and the tool policy in force.

    ``endpoints`` are normalised paths without the leading slash (``"mcp"``); one string is
    accepted for the single-endpoint form.
    """

    endpoints: tuple[str, ...]
    policy: Any  # sidecar.mcp.MCPServerAccessPolicy
    server: str  # the MCP server's name
    # Every OAuth scope some grant requires, derived once per policy (challenges, RFC 9728,
    # and whether a request needs the scope check at all).
    required_scopes: tuple[str, ...] = field(init=False, default=())
    _match_forms: tuple[str, ...] = field(init=False, default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        endpoints = (self.endpoints,) if isinstance(self.endpoints, str) else self.endpoints
        if not endpoints:
            raise ValueError("an MCP server needs at least one endpoint")
        object.__setattr__(self, "endpoints", tuple(dict.fromkeys(endpoints)))
        object.__setattr__(self, "_match_forms", tuple(match_form(e) for e in self.endpoints))
        scopes = [s for rule in self.policy.rules for g in rule.grants for s in g.required_scopes]
        object.__setattr__(self, "required_scopes", tuple(dict.fromkeys(scopes)))

    @property
    def method(self) -> str:
        """The first (primary) endpoint: where RFC 9728 metadata points."""
        return self.endpoints[0]

    def serves(self, path: str) -> bool:
        """True if ``path`` (a normalised method) is one of the endpoints or below one.

        Compared in the ACL's letter case (Go's simple lower-casing): an app whose router
        ignores case (Express, ASP.NET) would serve ``/MCP`` as its endpoint, so ``/MCP`` must be
        judged as one. Paths below an endpoint are MCP territory too; what is not JSON-RPC there
        is refused rather than forwarded uninspected.
        """
        path = match_form(path)
        return any(path == e or path.startswith(e + "/") for e in self._match_forms)


HeadCheck = Callable[[InboundRequest], Decision]


@dataclass(frozen=True)
class InboundPolicy:
    version: str = "none"
    head_checks: tuple[HeadCheck, ...] = ()
    bearer: Any = None  # sidecar.bearer.BearerConfig: the token check after the ACL
    mcp: McpRoute | None = None
    acl: Any = None  # sidecar.policy.acl.AccessControl, for the MCP server's other paths
    strip_headers: frozenset[bytes] = frozenset()  # client headers never forwarded (Authorization…)
    sources: Mapping[str, str] = field(default_factory=dict)  # what each layer was built from

    def check_head(self, request: InboundRequest) -> Decision:
        for check in self.head_checks:
            decision = check(request)
            if not decision.allowed:
                return decision
        return Decision.allow("pipeline", "allowed", rule=f"policy version {self.version}")

    def mcp_route_for(self, request: InboundRequest) -> McpRoute | None:
        """The MCP route if this request addresses an MCP endpoint or anything below one."""
        mcp = self.mcp
        if mcp is not None and mcp.serves(request.method):
            return mcp
        return None

    def acl_operation_allows(self, request: InboundRequest) -> bool:
        """True only if an ACL operation written for this caller names this path and allows
        this verb (a default action, or a catch-all such as ``/**``, does not count)."""
        return operation_allows(self.acl, request.caller, request.method, request.verb)


ALLOW_ALL = InboundPolicy()
