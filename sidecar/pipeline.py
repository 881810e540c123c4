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
from .policy.acl import match_form


@dataclass(frozen=True, slots=True)
class InboundRequest:
    caller: AppIdentity
    callee: AppIdentity
    verb: str  # upper-case HTTP method
    method: str  # the normalised Dapr method (path without leading slash)
    headers: Mapping[str, str]  # lower-case names, repeated values joined with ", "


@dataclass(frozen=True)
class McpRoute:
    """For an App ID registered as an MCP server: its endpoint and the tool policy in force."""

    method: str  # the endpoint's normalised path, e.g. "mcp"
    policy: Any  # sidecar.mcp.MCPServerAccessPolicy
    server: str  # the MCP server's name
    # Every OAuth scope some grant requires, derived once per policy (challenges, RFC 9728,
    # and whether a request needs the scope check at all).
    required_scopes: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        scopes = [s for rule in self.policy.rules for g in rule.grants for s in g.required_scopes]
        object.__setattr__(self, "required_scopes", tuple(dict.fromkeys(scopes)))


HeadCheck = Callable[[InboundRequest], Decision]


@dataclass(frozen=True)
class InboundPolicy:
    version: str = "none"
    head_checks: tuple[HeadCheck, ...] = ()
    bearer: Any = None  # sidecar.bearer.BearerConfig: the token check after the ACL
    mcp: McpRoute | None = None
    strip_headers: frozenset[bytes] = frozenset()  # client headers never forwarded (Authorization…)
    sources: Mapping[str, str] = field(default_factory=dict)  # what each layer was built from

    def check_head(self, request: InboundRequest) -> Decision:
        for check in self.head_checks:
            decision = check(request)
            if not decision.allowed:
                return decision
        return Decision.allow("pipeline", "allowed", rule=f"policy version {self.version}")

    def mcp_route_for(self, request: InboundRequest) -> McpRoute | None:
        """The MCP route if this request addresses the MCP endpoint or anything below it.

        Compared in the ACL's letter case (Go's simple lower-casing): an app whose router ignores
        case (Express, ASP.NET) would serve ``/MCP`` as its endpoint, so ``/MCP`` must be judged
        as one. Paths below the endpoint are MCP territory too; what is not JSON-RPC there is
        refused rather than forwarded uninspected.
        """
        mcp = self.mcp
        if mcp is None:
            return None
        path, endpoint = match_form(request.method), match_form(mcp.method)
        if path == endpoint or path.startswith(endpoint + "/"):
            return mcp
        return None


ALLOW_ALL = InboundPolicy()
