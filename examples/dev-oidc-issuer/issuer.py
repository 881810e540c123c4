#!/usr/bin/env python3
"""A development OAuth 2.0 / OIDC issuer for trying trustmesh's bearer layer.

    *** NOT FOR PRODUCTION. ***  Secrets live in a file or on the command line, keys live only in
    memory, there is no user login, no consent, no refresh tokens, no revocation, no rate limits,
    and the admin endpoint is guarded only by "the caller is on loopback".

It does exactly what a sidecar needs to see from an issuer, and nothing more:

* ``GET /.well-known/openid-configuration`` (and the same document at the RFC 8414 path
  ``/.well-known/oauth-authorization-server``): ``issuer``, ``jwks_uri``, ``token_endpoint``…
* ``GET /jwks.json``: the public signing keys, current first, retired ones for a grace period;
* ``POST /token``: the client-credentials grant (RFC 6749 §4.4), client authentication by HTTP
  Basic or by ``client_id``/``client_secret`` form fields (§2.3.1), optional ``scope``, optional
  ``audience`` or ``resource`` (RFC 8707); answers a signed JWT access token (RFC 9068 shape);
* ``POST /rotate`` (loopback callers only): a new signing key; the previous one stays published
  for ``--grace`` seconds so tokens it signed still verify until they expire.

Start it with ``--port 0`` and it prints one JSON line when it is listening::

    {"event": "ready", "issuer": "http://127.0.0.1:PORT"}

Dependencies: the standard library, ``cryptography`` and ``pyjwt`` (PyYAML only for a YAML
clients file).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

WELL_KNOWN_OPENID = "/.well-known/openid-configuration"
WELL_KNOWN_OAUTH = "/.well-known/oauth-authorization-server"
MAX_FORM_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Client:
    client_id: str
    secret: str
    scopes: frozenset[str] = frozenset()
    audiences: tuple[str, ...] = ()  # empty: the issuer's --audience list


def load_clients(path: Path | None, flags: list[list[str]]) -> dict[str, Client]:
    """Clients from a JSON (or YAML) file and from ``--client ID SECRET [SCOPE ...]`` flags.

    File shape: ``{"clients": {"<id>": {"secret": "...", "scopes": ["a", "b"],
    "audiences": ["mcp-server"]}}}``; ``scopes`` and ``audiences`` are optional.
    """
    clients: dict[str, Client] = {}
    if path is not None:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml  # only needed for YAML files

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
        for client_id, entry in (doc or {}).get("clients", {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("secret"), str):
                raise SystemExit(f"{path}: client {client_id!r} needs a string 'secret'")
            clients[client_id] = Client(
                client_id,
                entry["secret"],
                frozenset(entry.get("scopes", ())),
                tuple(entry.get("audiences", ())),
            )
    for flag in flags:
        if len(flag) < 2:
            raise SystemExit("--client needs at least ID and SECRET")
        client_id, secret, *scopes = flag
        clients[client_id] = Client(client_id, secret, frozenset(scopes))
    if not clients:
        raise SystemExit("no clients: give --client ID SECRET [SCOPE ...] or --clients FILE")
    return clients


# -- signing keys ----------------------------------------------------------------------------------


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]
    retired_at: float | None = None


def new_signing_key(alg: str) -> SigningKey:
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    kid = thumbprint(jwk)
    return SigningKey(kid, alg, private, {**jwk, "kid": kid, "use": "sig", "alg": alg})


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): a kid that names the key's contents."""
    required = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class KeyRing:
    """The current key plus retired keys still published until ``retired_at + grace``."""

    alg: str
    grace: float
    keys: list[SigningKey] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.keys.append(new_signing_key(self.alg))

    @property
    def current(self) -> SigningKey:
        with self.lock:
            return self.keys[0]

    def rotate(self, now: float) -> tuple[SigningKey, list[str]]:
        fresh = new_signing_key(self.alg)
        with self.lock:
            for key in self.keys:
                if key.retired_at is None:
                    key.retired_at = now
            self.keys.insert(0, fresh)
            self._prune(now)
            return fresh, [k.kid for k in self.keys[1:]]

    def jwks(self, now: float) -> dict[str, Any]:
        with self.lock:
            self._prune(now)
            return {"keys": [dict(k.jwk) for k in self.keys]}

    def _prune(self, now: float) -> None:
        self.keys = [
            k for k in self.keys if k.retired_at is None or now < k.retired_at + self.grace
        ]


# -- the token endpoint's logic (no I/O) -----------------------------------------------------------


class OAuthError(Exception):
    """An RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class Issuer:
    url: str
    clients: dict[str, Client]
    audiences: tuple[str, ...]
    ttl: int
    ring: KeyRing

    @property
    def base(self) -> str:
        """Where the endpoints live: the issuer URL without a trailing slash."""
        return self.url.removesuffix("/")

    def metadata(self) -> dict[str, Any]:
        scopes = sorted(set().union(*(c.scopes for c in self.clients.values())))
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.base}/jwks.json",
            "token_endpoint": f"{self.base}/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.ring.alg],
            "token_endpoint_auth_signing_alg_values_supported": [self.ring.alg],
            "scopes_supported": scopes,
            "x-trustmesh-warning": "development issuer, NOT FOR PRODUCTION",
        }

    def token(self, form: dict[str, list[str]], authorization: str | None) -> dict[str, Any]:
        single = {k: v[0] for k, v in form.items() if k != "resource"}
        repeated = sorted(k for k, v in form.items() if len(v) > 1 and k != "resource")
        if repeated:  # RFC 6749 §3.2: request parameters MUST NOT be included more than once
            raise OAuthError(400, "invalid_request", f"parameter {repeated[0]!r} is repeated")
        client = self._authenticate(single, authorization)
        grant_type = single.get("grant_type")
        if grant_type is None:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError(
                400, "unsupported_grant_type", "only client_credentials is supported here"
            )
        scopes = self._scopes(client, single.get("scope"))
        audiences = self._audiences(client, single.get("audience"), form.get("resource", []))
        now = int(time.time())
        key = self.ring.current
        claims = {
            "iss": self.url,
            "sub": client.client_id,
            "aud": audiences[0] if len(audiences) == 1 else audiences,
            "exp": now + self.ttl,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": " ".join(scopes),
        }
        # typ at+jwt: an RFC 9068 access token, which a sidecar with requiredTokenType checks
        headers = {"kid": key.kid, "typ": "at+jwt"}
        token = jwt.encode(claims, key.private, algorithm=key.alg, headers=headers)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.ttl,
            "scope": " ".join(scopes),
        }

    def _authenticate(self, form: dict[str, str], authorization: str | None) -> Client:
        basic = _basic_credentials(authorization) if authorization else None
        if authorization and basic is None:
            raise OAuthError(401, "invalid_client", "only HTTP Basic client authentication")
        if basic is not None and ("client_secret" in form or "client_id" in form):
            # RFC 6749 §2.3: a client MUST NOT use more than one authentication method
            raise OAuthError(400, "invalid_request", "use Basic or form credentials, not both")
        client_id, secret = basic or (form.get("client_id"), form.get("client_secret"))
        client = self.clients.get(client_id or "")
        # Compare against a dummy for unknown clients too, so timing does not list client ids.
        expected = client.secret if client is not None else secrets.token_hex(16)
        if not hmac.compare_digest((secret or "").encode(), expected.encode()) or client is None:
            raise OAuthError(401, "invalid_client", "client authentication failed")
        return client

    def _scopes(self, client: Client, requested: str | None) -> list[str]:
        if requested is None:  # RFC 6749 §3.3: the server may default; we grant what it may have
            return sorted(client.scopes)
        wanted = list(dict.fromkeys(requested.split()))
        refused = [s for s in wanted if s not in client.scopes]
        if refused:
            raise OAuthError(400, "invalid_scope", f"client may not have scope {refused[0]!r}")
        return wanted

    def _audiences(self, client: Client, audience: str | None, resources: list[str]) -> list[str]:
        allowed = client.audiences or self.audiences
        wanted = list(dict.fromkeys(([audience] if audience else []) + resources))
        if not wanted:
            return [allowed[0]]
        refused = [a for a in wanted if a not in allowed]
        if refused:  # RFC 8707 §2: invalid_target
            raise OAuthError(400, "invalid_target", f"audience {refused[0]!r} is not allowed")
        return wanted


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: Basic base64(urlencode(id) ":" urlencode(secret))."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


# -- HTTP ------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: IssuerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in (WELL_KNOWN_OPENID, WELL_KNOWN_OAUTH):
            self._json(200, self.server.issuer.metadata(), cache="public, max-age=300")
        elif path == "/jwks.json":
            jwks = self.server.issuer.ring.jwks(time.time())
            self._json(200, jwks, cache="public, max-age=300")
        elif path in ("/token", "/rotate"):
            self._json(405, {"error": "method_not_allowed"}, allow="POST")
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == "/token":
            self._token()
        elif path == "/rotate":
            self._rotate()
        elif path in (WELL_KNOWN_OPENID, WELL_KNOWN_OAUTH, "/jwks.json"):
            self._json(405, {"error": "method_not_allowed"}, allow="GET")
        else:
            self._json(404, {"error": "not_found"})

    def _token(self) -> None:
        try:
            form = self._form()
            answer = self.server.issuer.token(form, self.headers.get("Authorization"))
        except OAuthError as exc:
            extra = {}
            if exc.status == 401 and self.headers.get("Authorization"):
                extra["www_authenticate"] = 'Basic realm="dev-oidc-issuer"'
            body = {"error": exc.error, "error_description": exc.description}
            self._json(exc.status, body, cache="no-store", **extra)
            return
        self._json(200, answer, cache="no-store")  # RFC 6749 §5.1

    def _form(self) -> dict[str, list[str]]:
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            raise OAuthError(400, "invalid_request", f"the body must be {FORM_TYPE}")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "a Content-Length up to 64 KiB is required")
        raw = self.rfile.read(int(length))
        try:
            return parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise OAuthError(400, "invalid_request", "the form is not ASCII") from None

    def _rotate(self) -> None:
        if not ipaddress.ip_address(self.client_address[0]).is_loopback:
            self._json(403, {"error": "forbidden", "error_description": "loopback callers only"})
            return
        self._drain()
        fresh, published = self.server.issuer.ring.rotate(time.time())
        self.log_message("rotated signing key: new kid %s", fresh.kid)
        self._json(200, {"kid": fresh.kid, "previous": published})

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= MAX_FORM_BYTES:
            self.rfile.read(int(length))

    def _json(
        self,
        status: int,
        body: dict[str, Any],
        *,
        cache: str | None = None,
        allow: str | None = None,
        www_authenticate: str | None = None,
    ) -> None:
        data = json.dumps(body, indent=1).encode()
        if status >= 400:
            self.close_connection = True  # an unread request body must not become a request
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cache:
            self.send_header("Cache-Control", cache)
        if cache == "no-store":
            self.send_header("Pragma", "no-cache")
        if allow:
            self.send_header("Allow", allow)
        if www_authenticate:
            self.send_header("WWW-Authenticate", www_authenticate)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


class IssuerServer(ThreadingHTTPServer):
    daemon_threads = True
    issuer: Issuer


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Development OIDC issuer (client-credentials only). NOT FOR PRODUCTION."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=9000, help="port; 0 picks a free one")
    parser.add_argument(
        "--issuer", help="the issuer URL to publish (default http://HOST:PORT as bound)"
    )
    parser.add_argument("--clients", type=Path, help="JSON or YAML file of clients")
    parser.add_argument(
        "--client",
        nargs="+",
        action="append",
        default=[],
        metavar="ARG",
        help="a client: ID SECRET [SCOPE ...] (repeatable)",
    )
    parser.add_argument(
        "--audience",
        action="append",
        default=[],
        help="audience a token may be issued for (repeatable; the first is the default; "
        "default: mcp-server)",
    )
    parser.add_argument("--ttl", type=int, default=300, help="token lifetime, seconds")
    parser.add_argument("--alg", choices=("RS256", "ES256"), default="RS256")
    parser.add_argument(
        "--grace",
        type=float,
        default=900.0,
        help="seconds a rotated-out key stays in the JWKS (at least --ttl)",
    )
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be positive")
    if args.grace < args.ttl:
        parser.error("--grace must be at least --ttl, or tokens outlive their key")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    clients = load_clients(args.clients, args.client)
    server = IssuerServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    # Published as given: `iss` is compared byte for byte, so a trailing slash is kept.
    url = args.issuer or f"http://{shown}:{port}"
    ring = KeyRing(args.alg, args.grace)
    audiences = tuple(args.audience) or ("mcp-server",)
    server.issuer = Issuer(url, clients, audiences, args.ttl, ring)
    print(
        "dev-oidc-issuer: NOT FOR PRODUCTION — development keys in memory, secrets in plain text",
        file=sys.stderr,
    )
    if not ipaddress.ip_address(host).is_loopback:
        print(f"dev-oidc-issuer: WARNING: listening on {host}, not loopback", file=sys.stderr)
    print(json.dumps({"event": "ready", "issuer": url}, separators=(",", ":")), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
