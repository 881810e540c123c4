"""The outbound judge: what the app may ask of its own sidecar, as pure code.

The outbound port carries the app's identity into the mesh, so the door is guarded first
(loopback ``Host``/``Origin``, and the app's API token in ``dapr-api-token`` when one is set:
:func:`sidecar.http.invocation.check_outbound_request`), then the target is read from the Dapr
URL or the ``dapr-app-id`` header and resolved to an address and the exact SPIFFE ID the peer
must prove. The verdict is an :class:`Answer` (health, every refusal) or a :class:`Forward`
whose plan names the pool key (address, expected identity) and the head for the peer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from identity import AppIdentity, IdentityError

from ..errors import SidecarError
from ..http.headers import get_header, unexpected_body
from ..http.invocation import HEALTH_PATHS, check_outbound_request, parse_invocation
from ..http.message import request_head
from ..policy import Decision
from . import forward_headers
from .inbound import trace_id
from .verdict import Answer, Facts, Forward, ForwardPlan

Resolver = Callable[[str, str], tuple[str, int] | None]


class BodyNotAllowed(SidecarError):
    code = "ERR_BODY_NOT_ALLOWED"
    http_status = 400


class AppNotFound(SidecarError):
    code = "ERR_DIRECT_INVOKE"
    http_status = 404


@dataclass(frozen=True)
class OutboundSite:
    me: AppIdentity
    api_token: bytes | None = None  # DAPR_API_TOKEN: required in dapr-api-token when set


class OutboundJudge:
    def __init__(self, site: OutboundSite, resolve: Resolver) -> None:
        self.site = site
        self.resolve = resolve

    def head(self, request) -> Answer | Forward:
        facts = Facts(
            verb=request.method.decode("ascii", "replace"),
            caller=self.site.me,
            trace_id=trace_id(request.headers),
        )
        try:
            return self._judge(request, facts)
        except SidecarError as exc:
            return _refuse(exc, facts)

    def _judge(self, request, facts: Facts) -> Answer | Forward:
        check_outbound_request(request.method, request.target, request.headers, self.site.api_token)
        if request.method == b"GET" and request.target in HEALTH_PATHS:
            return Answer(Decision.allow("outbound", "health"), facts, 204, b"")
        why = unexpected_body(request.method, request.headers)
        if why is not None:
            return _refuse(BodyNotAllowed(why), facts)
        header_app = get_header(request.headers, b"dapr-app-id")
        small = len(request.target) + len(header_app or b"") <= 512
        route = (_route_cached if small else _route)(request.target, header_app, self.site.me)
        invocation, expected, decision = route
        if decision is None:  # the App ID is not a valid one: ``expected`` is the refusal
            return _refuse(expected, facts.but(path=invocation.target.method))
        # Named in the record even when it cannot be reached.
        facts = Facts(
            verb=facts.verb,
            path=invocation.target.method,
            caller=facts.caller,
            callee=expected,
            trace_id=facts.trace_id,
        )
        address = self.resolve(invocation.app_id, invocation.namespace)
        if address is None:
            message = (
                f"failed to invoke, id: {invocation.app_id}, err: app id {invocation.app_id} "
                f"not found in namespace {invocation.namespace}"
            )
            return _refuse(AppNotFound(message), facts)
        headers = forward_headers.to_peer(
            request.headers,
            authority=f"{invocation.app_id}.{invocation.namespace}",
            target=request.target,
        )
        head = request_head(request.method, invocation.target.wire_path, headers)
        return Forward(decision, facts, ForwardPlan(head, upstream=(address, expected)))


def _route(target: bytes, header_app: bytes | None, me: AppIdentity) -> tuple:
    """Where a request target (and its ``dapr-app-id``) points: ``(invocation, expected peer
    identity, decision)``, or ``(invocation, refusal, None)`` for an invalid App ID. Pure: a
    target that cannot be parsed raises."""
    invocation = parse_invocation(target, header_app, me.namespace)
    try:
        expected = AppIdentity(me.trust_domain, invocation.namespace, invocation.app_id)
    except IdentityError as exc:
        return invocation, AppNotFound(f"invalid app id {invocation.app_id!r}: {exc}"), None
    return invocation, expected, Decision.allow("outbound", "resolved", rule=str(expected))


# The same few targets come every request: each is parsed and validated once (short ones only,
# so the cache stays small whatever an app sends).
_route_cached = functools.lru_cache(maxsize=1024)(_route)


def _refuse(exc: SidecarError, facts: Facts) -> Answer:
    return Answer.deny(Decision.deny("outbound", exc.code, str(exc), exc.http_status), facts)
