"""Helpers for the security tier: callers in any namespace, raw requests on a caller's port.

``sidecar_in`` starts a sidecar holding exactly ``spiffe://public/ns/<namespace>/<app-id>``, so a
test can put two callers with the same App ID in different namespaces side by side. ``Caller``
sends exactly the bytes a test means (httpx on the caller's outbound port: Dapr service
invocation), with the MCP headers spelled out.
"""

from __future__ import annotations

import json

import httpx

from tests._support.mcp_mesh import TRUSTMESH, McpMesh

ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def sidecar_in(mcp_mesh: McpMesh, app_id: str, namespace: str, app_port: int | None = None):
    """A sidecar for ``namespace/app_id`` (a certificate for exactly that identity)."""
    svid = mcp_mesh.mesh.svid_dir(app_id, namespace)
    argv = [*TRUSTMESH, "sidecar", "--app-id", app_id, "--namespace", namespace,
            "--home", str(mcp_mesh.home), "--http-port", "0", "--svid-dir", str(svid)]  # fmt: skip
    if app_port is not None:
        argv += ["--app-port", str(app_port)]
    return mcp_mesh.procs.start(f"sidecar-{namespace}.{app_id}", argv)


def encode(message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def call(id_, name: str, arguments: dict) -> dict:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


def request(id_, method: str, params: dict | None = None) -> dict:
    message = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message


INITIALIZE_PARAMS = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "attack-probe", "version": "1"},
}


class Caller:
    """One caller app's view of an MCP server: POST/GET/DELETE on its own outbound port."""

    def __init__(self, proc, target: str, path: str = "mcp", *, timeout: float = 15) -> None:
        self.url = f"{proc.url()}/v1.0/invoke/{target}/method/{path}"
        self.http = httpx.Client(timeout=timeout)

    def post(
        self,
        message,
        *,
        version: str | None = "2025-06-18",
        session: str | None = None,
        headers: dict | None = None,
    ) -> httpx.Response:
        sent = dict(ACCEPT)
        if version is not None:
            sent["mcp-protocol-version"] = version
        if session is not None:
            sent["mcp-session-id"] = session
        sent.update(headers or {})
        body = message if isinstance(message, bytes) else encode(message)
        return self.http.post(self.url, content=body, headers=sent)

    def initialize(self, version: str = "2025-11-25") -> str:
        """Open a session (stateful server): initialize, then the initialized notification."""
        response = self.post(request("init", "initialize", INITIALIZE_PARAMS), version=version)
        assert response.status_code == 200, response.text
        session = response.headers["mcp-session-id"]
        notified = self.post(
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            version=version,
            session=session,
        )
        assert notified.status_code == 202, notified.text
        return session

    def get(self, session: str, headers: dict | None = None) -> httpx.Response:
        sent = {"accept": "text/event-stream", "mcp-protocol-version": "2025-11-25",
                "mcp-session-id": session, **(headers or {})}  # fmt: skip
        return self.http.get(self.url, headers=sent)

    def stream_status(self, session: str, headers: dict | None = None) -> int:
        """Open the session's GET stream and report its status (closed at once: an open SSE
        stream never ends by itself)."""
        sent = {"accept": "text/event-stream", "mcp-protocol-version": "2025-11-25",
                "mcp-session-id": session, **(headers or {})}  # fmt: skip
        with self.http.stream("GET", self.url, headers=sent) as response:
            return response.status_code

    def delete(self, session: str) -> httpx.Response:
        headers = {"mcp-protocol-version": "2025-11-25", "mcp-session-id": session}
        return self.http.delete(self.url, headers=headers)

    def close(self) -> None:
        self.http.close()


def json_messages(response: httpx.Response) -> list:
    """The JSON-RPC messages of a response, whether a JSON body or an event stream."""
    from sidecar.mcp import parse_stream

    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(e.data) for e in parse_stream(response.content) if e.data.strip()]
    document = response.json()
    return document if isinstance(document, list) else [document]
