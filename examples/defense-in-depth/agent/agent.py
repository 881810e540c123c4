"""An agent of the defense-in-depth example: ``POST /run`` lists the server's tools and calls one.

It talks to the MCP server by App ID through its own sidecar
(``http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/mcp-server/method/mcp``) with the official ``mcp``
client, so every request crosses mutual TLS and the server sidecar's three checks: the ACL, the
bearer token, the tool policy.

With ``CLIENT_ID``/``CLIENT_SECRET`` (and ``ISSUER_URL``) set, it first gets an access token with
the OAuth 2.0 client-credentials grant, from the token endpoint the issuer's OIDC discovery
document names, and sends it as ``Authorization: Bearer`` on every MCP request. Without them it
sends no token. ``POST /run`` with a JSON body ``{"token": "..."}`` sends that string instead
(to try a forged or expired token by hand).

The answer says what happened, layer by layer, without guessing which layer spoke: the tools it
saw and the call's result, or the first HTTP refusal (status, ``WWW-Authenticate``, body).

    AGENT_TOOL        the tool to call (default ``add``); AGENT_ARGUMENTS a JSON object
    MCP_SERVER_APP_ID the server's App ID (default ``mcp-server``)
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

APP_ID = os.environ.get("APP_ID", "agent")
SIDECAR = f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"
SERVER_APP_ID = os.environ.get("MCP_SERVER_APP_ID", "mcp-server")
MCP_URL = f"{SIDECAR}/v1.0/invoke/{SERVER_APP_ID}/method/mcp"
TOOL = os.environ.get("AGENT_TOOL", "add")
DEFAULT_ARGUMENTS = {"add": {"a": 2, "b": 3}, "echo": {"message": "hello"}}
ARGUMENTS = json.loads(os.environ.get("AGENT_ARGUMENTS") or "null") or DEFAULT_ARGUMENTS.get(
    TOOL, {}
)


class Refused(Exception):
    """An HTTP error answer to one of our MCP requests, kept as the sidecar sent it."""

    def __init__(self, status: int, www_authenticate: str | None, body) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.www_authenticate, self.body = status, www_authenticate, body

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "www_authenticate": self.www_authenticate,
            "body": self.body,
        }


def client_credentials_token() -> tuple[str | None, str]:
    """(access token, how it was obtained) — or (None, "none") without credentials."""
    client_id, secret = os.environ.get("CLIENT_ID"), os.environ.get("CLIENT_SECRET")
    issuer = os.environ.get("ISSUER_URL")
    if not (client_id and secret and issuer):
        return None, "none"
    discovery = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    token_endpoint = httpx2.get(discovery, timeout=10).raise_for_status().json()["token_endpoint"]
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    answer = httpx2.post(token_endpoint, data=form, timeout=10).raise_for_status().json()
    return answer["access_token"], f"client_credentials from {issuer} (scope: {answer['scope']})"


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_once(token: str | None) -> dict:
    refusals: list[Refused] = []

    async def remember_refusal(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            await response.aread()
            refusals.append(
                Refused(
                    response.status_code,
                    response.headers.get("www-authenticate"),
                    _json_or_text(response.content),
                )
            )

    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    if os.environ.get("DAPR_API_TOKEN"):  # our own sidecar's local door (set by trustmesh run)
        headers["dapr-api-token"] = os.environ["DAPR_API_TOKEN"]
    http = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(30, read=60),
        event_hooks={"response": [remember_refusal]},
    )
    out: dict = {}
    try:
        async with http, Client(streamable_http_client(MCP_URL, http_client=http)) as client:
            listed = await client.list_tools()
            out["tools"] = sorted(t.name for t in listed.tools)
            call: dict = {"tool": TOOL, "arguments": ARGUMENTS}
            seen = len(refusals)
            try:
                result = await client.call_tool(TOOL, ARGUMENTS)
            except Exception as exc:  # a refused call: the sidecar's JSON-RPC error
                refused = refusals[seen] if len(refusals) > seen else None
                call["refused"] = refused.as_dict() if refused else {"error": str(_unwrap(exc))}
            else:
                text = "".join(getattr(c, "text", "") for c in result.content)
                call["error" if result.is_error else "result"] = text
            out["call"] = call
    except Exception as exc:
        if not refusals:
            raise
        out = {"refused": refusals[0].as_dict()}
        del exc
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args) -> None:
        print(f"{self.command} {self.path}", flush=True)

    def do_POST(self) -> None:
        if self.path != "/run":
            self._reply(404, {"detail": "not found"})
            return
        length = int(self.headers.get("content-length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}") if length else {}
        try:
            if "token" in request:
                token, how = request["token"], "given in the /run request"
            else:
                token, how = client_credentials_token()
            answer = {"agent": APP_ID, "token": how, **anyio.run(run_once, token)}
        except BaseException as exc:  # report, never crash the agent
            exc = _unwrap(exc)
            answer = {"agent": APP_ID, "error": f"{type(exc).__name__}: {exc}"}
            self._reply(502, answer)
            return
        self._reply(200, answer)

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload, indent=2).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> None:
    port = int(os.environ.get("APP_PORT", "5100"))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(json.dumps({"event": "ready", "app": APP_ID, "port": port}), flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
