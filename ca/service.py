"""The signing service's decisions, without sockets: request in, response out.

The trio server (:mod:`ca.server`) parses HTTP and TLS and hands this module an
:class:`ApiRequest`: method, path, the bearer token if any, the body, and the App identity the
client's certificate proved (already chain-verified by OpenSSL against the bundle) if any.
:meth:`SigningService.handle` returns an :class:`ApiResponse`; every refusal is a :class:`CAError`
turned into ``{"errorCode", "message"}`` with its status, so nothing here formats errors twice.

Who gets a certificate is decided by exactly one credential:

* a join token (``Authorization: Bearer tmjoin_…``): its identity, once, before it expires;
* or, with no token, the client certificate of a current SVID: the same identity again (renewal).

Both at once is refused, as is neither. The CSR contributes only its public key. The order is
cheap-and-harmless first: the token is *checked* before the CSR is parsed (so unauthenticated
callers learn nothing about CSR handling) but *consumed* only once the CSR is known good, so a
typo in a CSR does not burn a token.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from identity import AppIdentity, IdentityError, TrustBundle, certificates_to_pem

from ._authority import DEFAULT_LEAF_TTL, CertificateAuthority, check_workload_identity
from ._errors import CAError, MethodNotAllowed, NotFound, Unauthenticated
from .csr import public_key_from_csr
from .tokens import TokenStore

log = structlog.get_logger("trustmesh.ca")

SVID_PATH = "/v1/svid"
BUNDLE_PATH = "/v1/bundle"
ROUTES: dict[str, tuple[str, ...]] = {SVID_PATH: ("POST",), BUNDLE_PATH: ("GET",)}
JSON_HEADERS = (("content-type", "application/json"), ("cache-control", "no-store"))


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    authorization: str | None = None
    body: bytes = b""
    peer: AppIdentity | None = None


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = JSON_HEADERS


def json_response(status: int, document: dict) -> ApiResponse:
    return ApiResponse(status, json.dumps(document).encode() + b"\n")


def error_response(exc: CAError | IdentityError) -> ApiResponse:
    response = json_response(exc.http_status, {"errorCode": exc.code, "message": str(exc)})
    if isinstance(exc, MethodNotAllowed):
        allow = (("allow", ", ".join(exc.allow)),)
        return ApiResponse(response.status, response.body, response.headers + allow)
    return response


def route(method: str, path: str) -> str:
    """The route ``path`` names; :class:`NotFound` or :class:`MethodNotAllowed` otherwise."""
    path = path.split("?", 1)[0]
    allowed = ROUTES.get(path)
    if allowed is None:
        raise NotFound(f"no such endpoint: {path}")
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed on {path}", allowed)
    return path


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header; other schemes are refused, not ignored."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <join token>'")
    return token.strip()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SigningService:
    """The CA's HTTP API over one authority and its token store."""

    def __init__(
        self,
        authority: CertificateAuthority,
        tokens: TokenStore,
        *,
        svid_ttl: dt.timedelta = DEFAULT_LEAF_TTL,
        clock: Callable[[], dt.datetime] = _utcnow,
        trusted: TrustBundle | None = None,
    ) -> None:
        self.authority = authority
        # What the CA hands out and accepts renewals under: its own root, and during a rotation
        # the other one too (ca.rotation). Replaced with ``authority`` when the files change.
        self.trusted = trusted if trusted is not None else authority.bundle
        self.tokens = tokens
        self.svid_ttl = svid_ttl
        self.clock = clock

    def handle(self, request: ApiRequest) -> ApiResponse:
        """Answer one request; never raises for anything a client can cause."""
        try:
            path = route(request.method, request.path)
            if path == BUNDLE_PATH:
                return self._bundle()
            return self._sign(request)
        except (CAError, IdentityError) as exc:
            log.info(
                "request refused",
                path=request.path,
                error_code=exc.code,
                reason=str(exc),
                peer=str(request.peer) if request.peer else None,
            )
            return error_response(exc)

    def _bundle(self) -> ApiResponse:
        return json_response(
            200,
            {
                "bundle": self.trusted.to_pem().decode("ascii"),
                "trust_domain": self.authority.trust_domain,
            },
        )

    def _sign(self, request: ApiRequest) -> ApiResponse:
        now = self.clock()
        token = bearer_token(request.authorization)
        if token is not None and request.peer is not None:
            raise Unauthenticated("present a join token or a client certificate, not both")
        if token is not None:
            identity, via = self.tokens.check(token, now=now), "join-token"
        elif request.peer is not None:
            identity, via = request.peer, "renewal"
        else:
            raise Unauthenticated(
                "send 'Authorization: Bearer <join token>', or renew over mTLS with a current SVID"
            )
        check_workload_identity(identity)
        public_key = public_key_from_csr(request.body)
        if token is not None:
            # Atomic under the store's lock: if two requests raced, one of them gets TokenUsed.
            identity = self.tokens.consume(token, now=now)
        chain = self.authority.sign_leaf(identity, public_key, now=now, ttl=self.svid_ttl)
        leaf = chain[0]
        log.info(
            "svid issued",
            spiffe_id=str(identity),
            serial=f"{leaf.serial_number:x}",
            not_after=leaf.not_valid_after_utc.isoformat(),
            via=via,
        )
        return json_response(
            200,
            {
                "svid": certificates_to_pem(chain).decode("ascii"),
                "bundle": self.trusted.to_pem().decode("ascii"),
                "spiffe_id": str(identity),
                "serial": f"{leaf.serial_number:x}",
                "expires_at": leaf.not_valid_after_utc.isoformat(),
            },
        )
