"""Tool-level MCP policy, shown with the official ``mcp`` SDK on both ends.

The example ``MCPServer`` (``add``, ``get_weather_alert``, ``echo``) runs twice, answering POSTs
as JSON and as SSE, each behind its own sidecar; the client is the SDK's ``Client`` calling Dapr's
invocation URL on an outbound-only ``mcp-client`` sidecar, so every call crosses the real mTLS
hop. The policy is edited with the CLI (``grant``/``revoke`` with ``--wait``) as a user would.

Each test names the policy it needs; ``PolicyState`` runs only the commands that get there, so
the server × client-mode instances of one test share one change.
"""

from __future__ import annotations

import httpx
import pytest

from tests._support.mcp_logging_server import LEGACY_REFUSAL
from tests._support.mcp_mesh import CLIENT_ID, PolicyState, invoke_url, sdk

pytestmark = pytest.mark.e2e

SERVER_MODES = ("json", "sse")
CLIENT_MODES = ("legacy", "2026-07-28")
ALL_TOOLS = ["add", "echo", "get_weather_alert"]
GRANTED = {CLIENT_ID: "add,echo"}
ARGUMENTS = {"add": {"a": 1, "b": 2}, "echo": {"message": "m"}, "get_weather_alert": {"city": "c"}}
WEATHER = {"name": "get_weather_alert", "arguments": {"city": "Seattle"}}
WEATHER_DENIED = f"MCPError: tool 'get_weather_alert' is not granted to caller '{CLIENT_ID}'"

both_modes = pytest.mark.parametrize(
    ("server_mode", "client_mode"),
    [(s, c) for s in SERVER_MODES for c in CLIENT_MODES],
)


class SdkMesh:
    def __init__(self, mcp_mesh) -> None:
        self.mesh = mcp_mesh
        self.ports: dict[str, int] = {}
        for mode in SERVER_MODES:
            _, port = mcp_mesh.example_server(f"example-{mode}", mode=mode)
            mcp_mesh.sidecar(self.server_id(mode), app_port=port)
            self.ports[mode] = port
        self.client = mcp_mesh.sidecar(CLIENT_ID)
        for mode in SERVER_MODES:
            mcp_mesh.register(self.server_id(mode))
        self.policy = PolicyState(mcp_mesh)
        for mode in SERVER_MODES:
            self.policy.known[self.server_id(mode)] = {}  # just created: deny-all

    @staticmethod
    def server_id(mode: str) -> str:
        return f"mcp-server-{mode}"

    def url(self, mode: str) -> str:
        return invoke_url(self.client, self.server_id(mode))

    def direct_url(self, mode: str) -> str:
        return f"http://127.0.0.1:{self.ports[mode]}/mcp"

    def ensure(self, mode: str, wanted: dict[str, str]) -> None:
        self.policy.ensure(self.server_id(mode), wanted)


@pytest.fixture(scope="module")
def sdk_mesh(mcp_mesh):
    return SdkMesh(mcp_mesh)


# --- the story: deny-all, grant, refuse, revoke, wildcard ------------------------------------


@both_modes
async def test_no_tool_is_reachable_before_a_grant(sdk_mesh, server_mode, client_mode):
    sdk_mesh.ensure(server_mode, {})
    url = sdk_mesh.url(server_mode)
    listed = await sdk(url, client_mode, "list")
    assert listed == {
        "ok": False,
        "error": f"MCPError: session refused: caller '{CLIENT_ID}' holds no grant on MCP "
        f"server '{sdk_mesh.server_id(server_mode)}'",
    }
    called = await sdk(url, client_mode, "call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    assert called["ok"] is False and "session refused" in called["error"]


@both_modes
async def test_grant_shows_exactly_the_granted_tools(sdk_mesh, server_mode, client_mode):
    sdk_mesh.ensure(server_mode, GRANTED)
    url = sdk_mesh.url(server_mode)
    assert await sdk(url, client_mode, "list") == {"ok": True, "tools": ["add", "echo"]}
    added = await sdk(url, client_mode, "call", {"name": "add", "arguments": {"a": 2, "b": 3}})
    assert added == {"ok": True, "is_error": False, "result": ["5"]}
    echoed = await sdk(url, client_mode, "call", {"name": "echo", "arguments": {"message": "hi"}})
    assert echoed == {"ok": True, "is_error": False, "result": ["hi"]}


@both_modes
async def test_ungranted_tool_call_is_refused_naming_tool_and_caller(
    sdk_mesh, server_mode, client_mode
):
    sdk_mesh.ensure(server_mode, GRANTED)
    refused = await sdk(sdk_mesh.url(server_mode), client_mode, "call", WEATHER)
    assert refused == {"ok": False, "error": WEATHER_DENIED}


# --- access test agrees with the sidecar ------------------------------------------------------


async def test_access_test_prints_the_sidecars_verdict(sdk_mesh):
    mode = "json"
    sdk_mesh.ensure(mode, GRANTED)
    server_id = sdk_mesh.server_id(mode)
    for tool in ALL_TOOLS:
        preview = sdk_mesh.mesh.tm(
            "mcpserver", "access", "test", server_id, "--caller", CLIENT_ID, "--tool", tool,
            check=False,
        )  # fmt: skip
        call = {"name": tool, "arguments": ARGUMENTS[tool]}
        actual = await sdk(sdk_mesh.url(mode), "2026-07-28", "call", call)
        if actual["ok"]:
            assert preview.returncode == 0, (tool, preview.stdout)
            assert preview.stdout.startswith("ALLOWED: "), preview.stdout
        else:
            assert preview.returncode == 1, (tool, preview.stdout)
            assert preview.stdout.startswith("DENIED: "), preview.stdout
            # The preview says what the sidecar said.
            reason = actual["error"].removeprefix("MCPError: ")
            assert preview.stdout.removeprefix("DENIED: ").startswith(reason), preview.stdout
    stranger = sdk_mesh.mesh.tm(
        "mcpserver", "access", "test", server_id, "--caller", "other-agent", "--tool", "add",
        check=False,
    )  # fmt: skip
    assert stranger.returncode == 1 and stranger.stdout.startswith("DENIED: ")


# --- 2026-07-28 discovery ---------------------------------------------------------------------


def discover_body(meta: dict) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}


MODERN_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2026-07-28",
    "mcp-method": "server/discover",
}
FULL_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


@pytest.mark.parametrize("server_mode", SERVER_MODES)
@pytest.mark.parametrize(
    "meta",
    [FULL_META, {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}],
    ids=["well-formed", "server-400"],
)
async def test_server_discover_answer_comes_back_unchanged(sdk_mesh, server_mode, meta):
    sdk_mesh.ensure(server_mode, GRANTED)
    body = discover_body(meta)
    with httpx.Client(timeout=10) as http:
        direct = http.post(sdk_mesh.direct_url(server_mode), json=body, headers=MODERN_HEADERS)
        through = http.post(sdk_mesh.url(server_mode), json=body, headers=MODERN_HEADERS)
    assert through.status_code == direct.status_code
    assert through.headers["content-type"] == direct.headers["content-type"]
    assert through.content == direct.content
    if meta is FULL_META:
        assert through.status_code == 200 and b"supportedVersions" in through.content
    else:
        assert through.status_code == 400 and b"clientCapabilities" in through.content


async def test_auto_mode_discovers_then_sees_only_granted_tools(sdk_mesh):
    mode = "sse"
    sdk_mesh.ensure(mode, GRANTED)
    url = sdk_mesh.url(mode)
    assert await sdk(url, "auto", "list") == {"ok": True, "tools": ["add", "echo"]}
    assert await sdk(url, "auto", "call", WEATHER) == {"ok": False, "error": WEATHER_DENIED}


# --- revoke, wildcard, and answers that are not the policy's ------------------------------


@both_modes
async def test_revoke_takes_echo_away_from_list_and_call(sdk_mesh, server_mode, client_mode):
    server_id = sdk_mesh.server_id(server_mode)
    if sdk_mesh.policy.known.get(server_id) != {CLIENT_ID: frozenset({"add"})}:
        sdk_mesh.ensure(server_mode, GRANTED)
        sdk_mesh.ensure(server_mode, {CLIENT_ID: "add"})
        assert sdk_mesh.policy.commands[-1] == ("revoke", server_id, CLIENT_ID, "echo")
    url = sdk_mesh.url(server_mode)
    assert await sdk(url, client_mode, "list") == {"ok": True, "tools": ["add"]}
    refused = await sdk(url, client_mode, "call", {"name": "echo", "arguments": {"message": "x"}})
    assert refused == {
        "ok": False,
        "error": f"MCPError: tool 'echo' is not granted to caller '{CLIENT_ID}'",
    }


@both_modes
async def test_wildcard_caller_and_tools_show_every_tool(sdk_mesh, server_mode, client_mode):
    sdk_mesh.ensure(server_mode, {"*": "*"})
    listed = await sdk(sdk_mesh.url(server_mode), client_mode, "list")
    assert listed == {"ok": True, "tools": ALL_TOOLS}


@both_modes
async def test_a_tool_that_raises_comes_back_as_the_servers_own_error_result(
    sdk_mesh, server_mode, client_mode
):
    sdk_mesh.ensure(server_mode, {"*": "*"})
    # get_weather_alert fails inside the server: its weather service is not reachable.
    through = await sdk(sdk_mesh.url(server_mode), client_mode, "call", WEATHER)
    direct = await sdk(sdk_mesh.direct_url(server_mode), client_mode, "call", WEATHER)
    assert through == direct
    assert through == {
        "ok": True,
        "is_error": True,
        "result": ["Error executing tool get_weather_alert"],
    }


@pytest.fixture(scope="module")
def legacy_only(mcp_mesh, sdk_mesh):
    """A server that does not speak 2026-07-28 (answers it with 400, as mcp 1.x does)."""
    proc, log = mcp_mesh.logging_server("legacy-only", mode="json", legacy_only=True)
    mcp_mesh.sidecar("legacy-mcp", app_port=proc.ready["port"])
    mcp_mesh.register("legacy-mcp")
    mcp_mesh.grant("legacy-mcp", CLIENT_ID, "add,echo")
    return invoke_url(sdk_mesh.client, "legacy-mcp"), log


async def test_auto_mode_gets_the_servers_400_and_falls_back(legacy_only):
    url, log = legacy_only
    body = discover_body(FULL_META)
    with httpx.Client(timeout=10) as http:
        refused = http.post(url, json=body, headers=MODERN_HEADERS)
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/json"
    assert refused.content == LEGACY_REFUSAL  # the server's own answer, byte for byte

    before = len(log.entries())
    assert await sdk(url, "auto", "list") == {"ok": True, "tools": ["add", "echo"]}
    arrived = log.entries()[before:]
    methods = [dict(e["headers"]).get("mcp-method") for e in arrived]
    assert methods[0] == "server/discover"  # the probe reached the server…
    assert any(b'"initialize"' in log.bodies()[before + i] for i in range(len(arrived)))
    assert await sdk(url, "auto", "call", WEATHER) == {"ok": False, "error": WEATHER_DENIED}


@pytest.fixture(scope="module")
def resumable(mcp_mesh, sdk_mesh):
    """The SDK's resumability on: 2025-11-25 SSE streams start with a priming event."""
    proc, _ = mcp_mesh.logging_server("resumable", mode="sse", stateless=False, event_store=True)
    mcp_mesh.sidecar("resumable-mcp", app_port=proc.ready["port"])
    mcp_mesh.register("resumable-mcp")
    mcp_mesh.grant("resumable-mcp", CLIENT_ID, "add,echo")
    direct = f"http://127.0.0.1:{proc.ready['port']}/mcp"
    return invoke_url(sdk_mesh.client, "resumable-mcp"), direct


async def test_list_works_with_a_resumable_server(resumable):
    url, direct = resumable
    every = await sdk(direct, "legacy", "list")
    assert every == {"ok": True, "tools": ["add", "echo", "fail", "get_weather_alert"]}
    assert await sdk(url, "legacy", "list") == {"ok": True, "tools": ["add", "echo"]}
