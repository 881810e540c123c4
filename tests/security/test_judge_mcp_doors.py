"""#10.4: an MCP server app has no uninspected door.

Behind the server's sidecar runs the official SDK serving *both* transports on one app
(Streamable HTTP at ``/mcp``, the legacy HTTP+SSE transport at ``/sse`` + ``/messages/``) and a
plain ``/status``, writing down every request before the SDK sees it. The caller ``mcp-client``
holds a real mesh certificate and may use ``add`` and ``echo``.

* The legacy transport works when the app is reached directly (the door is real), and through
  the sidecar it is refused with an error naming why; the SDK server's log shows no legacy
  request arrived. Twin: the SDK's Streamable HTTP client calls ``add`` through ``/mcp``.
* ``/status`` is refused until an ACL operation names it for this caller; then it arrives.
"""

from __future__ import annotations

import json
import sys
import uuid

import anyio
import httpx
import pytest

from tests._support.mcp_mesh import CLIENT_ID, McpMesh, RequestLog, invoke_url, sdk
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

SERVER_ID = "mcp-server"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


class World:
    def __init__(self, mesh: McpMesh, app_port: int, client, log: RequestLog) -> None:
        self.mesh, self.app_port, self.client, self.log = mesh, app_port, client, log

    def paths(self) -> list[str]:
        return [entry["path"] for entry in self.log.entries()]


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("mcp-doors"), mesh_ca))
    try:
        log = RequestLog(mesh.root / "two-transport.requests.jsonl")
        server = mesh.procs.start(
            "two-transport-server",
            [sys.executable, "-m", "tests._support.judge_two_transport_server"],
            env={"MCP_REQUEST_LOG": str(log.path)},
        )
        mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
        client = mesh.sidecar(CLIENT_ID)
        mesh.tm("mcpserver", "create", SERVER_ID)
        mesh.grant(SERVER_ID, CLIENT_ID, "add,echo")
        yield World(mesh, server.ready["port"], client, log)
    finally:
        killed = mesh.procs.stop_all()
        assert not killed, f"processes outlived SIGTERM: {killed}"


async def legacy_sdk_call(url: str, headers: dict | None = None) -> str:
    """The SDK's legacy HTTP+SSE client: connect, initialize, call the ungranted tool.

    Through a sidecar the target is named by ``dapr-app-id`` (sent on every request), so the
    ``/messages/?session_id=`` URL the server announces resolves through the sidecar too."""
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    with anyio.fail_after(30):
        async with (
            sse_client(url, headers=headers, timeout=10) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            result = await session.call_tool("get_weather_alert", {"city": "Oslo"})
            return " ".join(c.text for c in result.content if getattr(c, "text", None))


async def test_the_legacy_door_is_real_when_the_app_is_reached_directly(world):
    """Control: without the sidecar, the legacy transport runs the ungranted tool."""
    text = await legacy_sdk_call(f"http://127.0.0.1:{world.app_port}/sse")
    assert "the denied tool ran" in text
    world.log.path.write_text("")  # what follows must arrive through the sidecar or not at all


async def test_legacy_sdk_client_through_the_sidecar_is_refused_and_nothing_arrives(world):
    with pytest.raises(BaseException) as caught:
        await legacy_sdk_call(f"{world.client.url()}/sse", {"dapr-app-id": SERVER_ID})
    assert "403" in repr(caught.value) or "Forbidden" in repr(caught.value), caught.value
    assert not [p for p in world.paths() if p.startswith(("/sse", "/messages"))]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "sse"),
        ("POST", "messages/?session_id=" + uuid.uuid4().hex),
        ("POST", "MESSAGES/?session_id=" + uuid.uuid4().hex),
        ("POST", "mcp2?session_id=" + uuid.uuid4().hex),
    ],
)
def test_legacy_transport_is_refused_with_an_error_that_says_why(world, method, path):
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "get_weather_alert", "arguments": {"city": "Oslo"}},
        }
    ).encode()
    response = httpx.request(
        method,
        invoke_url(world.client, SERVER_ID, path),
        headers=ACCEPT,
        content=body if method == "POST" else None,
        timeout=15,
    )
    assert response.status_code == 403, response.text
    error = response.json()
    assert error["errorCode"] == "ERR_MCP_LEGACY_TRANSPORT"
    assert "legacy HTTP+SSE transport" in error["message"]
    assert "use Streamable HTTP at /mcp" in error["message"]
    assert not world.log.received(body)


async def test_streamable_http_twin_works_through_mcp(world):
    url = invoke_url(world.client, SERVER_ID)
    called = await sdk(url, "auto", "call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    assert called == {"ok": True, "is_error": False, "result": ["5"]}, called
    assert "/mcp" in world.paths()


def test_another_path_is_refused_until_an_acl_operation_names_it(world, tmp_path):
    url = invoke_url(world.client, SERVER_ID, "status")
    refused = httpx.get(url, timeout=15)
    assert refused.status_code == 403, refused.text
    assert refused.json()["errorCode"] == "ERR_MCP_UNINSPECTED_PATH"
    assert "/status" not in world.paths()

    manifest = tmp_path / "open-status.yaml"
    manifest.write_text(
        f"""apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: open-status
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - appId: {CLIENT_ID}
        defaultAction: allow
        trustDomain: public
        namespace: default
        operations:
          - name: /status
            httpVerb: [GET]
            action: allow
"""
    )
    world.mesh.tm("apply", "-f", str(manifest))
    world.mesh.tm("appid", "update", SERVER_ID, "--app-config", "open-status", "--wait")
    opened = httpx.get(url, timeout=15)
    assert opened.status_code == 200, opened.text
    assert opened.json() == {"status": "ok"}
    assert "/status" in world.paths()
    # Naming /status opened /status for GET, nothing else: the legacy door stays shut.
    assert httpx.get(invoke_url(world.client, SERVER_ID, "sse"), timeout=15).status_code == 403
