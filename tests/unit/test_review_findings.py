"""Security review of the inbound enforcement path: one test per way it was found to fail open.

Each was written as ``xfail(strict=True)`` against the code as reviewed; every finding is fixed
and the marks are gone, so these now guard against the same holes reopening.

The in-process harness runs the real :class:`InboundProxy` handler against a scripted app on a
loopback socket; the caller side is an in-memory HTTP connection with a verified identity.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import h11
import trio
import trio.testing

from identity import AppIdentity
from sidecar.audit import AuditLog
from sidecar.http.connection import HttpConnection
from sidecar.http.relay import read_whole_body
from sidecar.http.server import ConnectionInfo
from sidecar.mcp import parse_policy
from sidecar.metrics import SidecarMetrics
from sidecar.pipeline import InboundPolicy, InboundRequest, McpRoute
from sidecar.policy.acl import evaluate_acl
from sidecar.policy.configuration import parse_configuration
from sidecar.proxy import bearer_gate, mcp_route
from sidecar.proxy.inbound import InboundConfig, InboundProxy

ME = AppIdentity("public", "default", "mcp-server")
CALLER = AppIdentity("public", "default", "analyst-agent")
ALL_TOOLS = ["add", "echo", "get_weather_alert"]

POLICY = parse_policy(
    {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "MCPServerAccessPolicy",
        "metadata": {"name": "mcp-server"},
        "spec": {
            "mcpServerRef": "mcp-server",
            "rules": [
                {
                    "callers": [{"appID": "analyst-agent"}],
                    "grants": [
                        {"capability": "tools", "names": ["add", "echo"]},
                        {
                            "capability": "resources",
                            "names": ["secret://payroll"],
                            "requiredScopes": ["payroll.read"],
                        },
                        {
                            "capability": "prompts",
                            "names": ["review"],
                            "requiredScopes": ["prompts.read"],
                        },
                    ],
                }
            ],
        },
    }
)
ROUTE = McpRoute("mcp", POLICY, "mcp-server")


def mcp_policy(**kw) -> InboundPolicy:
    return InboundPolicy(version="1", mcp=ROUTE, **kw)


# --- harness ---

Answer = Callable[[h11.Request, bytes], tuple[int, list[tuple[bytes, bytes]], bytes]]


class FakeApp:
    """A loopback HTTP/1.1 app: records what it received and answers with ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[tuple[h11.Request, bytes]] = []
        self.port = 0

    async def serve(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._connection, listeners)

    async def _connection(self, stream) -> None:
        conn = HttpConnection(stream, h11.SERVER)
        while True:
            event = await conn.next_event()
            if not isinstance(event, h11.Request):
                return
            body = await read_whole_body(conn, 1 << 24)
            self.received.append((event, body))
            status, headers, out = self.answer(event, body)
            headers = [*headers, (b"content-length", str(len(out)).encode())]
            await conn.send(h11.Response(status_code=status, headers=headers))
            await conn.send(h11.Data(data=out))
            await conn.send(h11.EndOfMessage())
            if not conn.reusable:
                return
            conn.start_next_cycle()


async def exchange(
    nursery: trio.Nursery,
    policy: InboundPolicy,
    answer: Answer,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),
    body: bytes = b"",
) -> tuple[FakeApp, h11.Response, bytes]:
    app = FakeApp(answer)
    await app.serve(nursery)
    proxy = InboundProxy(
        InboundConfig(me=ME, app_port=app.port),
        lambda: policy,
        AuditLog(None),
        SidecarMetrics(),
        nursery,
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = HttpConnection(client_stream, h11.CLIENT)
    server = HttpConnection(server_stream, h11.SERVER)
    info = ConnectionInfo("10.0.0.9", 4444, peer_identity=CALLER)

    async def serve_one() -> None:
        request = await server.next_event()
        await proxy.handle(server, request, info)

    nursery.start_soon(serve_one)
    head = [(b"host", b"mcp-server"), *headers]
    if body:
        head.append((b"content-length", str(len(body)).encode()))
    await client.send(h11.Request(method=method, target=target, headers=head))
    if body:
        await client.send(h11.Data(data=body))
    await client.send(h11.EndOfMessage())
    response = await client.next_event()
    assert isinstance(response, h11.Response), response
    data = await read_whole_body(client, 1 << 24)
    return app, response, data


def tools_result(request_id) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "result": {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ALL_TOOLS]},
    }


def listed_names(payload) -> set[str]:
    messages = payload if isinstance(payload, list) else [payload]
    names: set[str] = set()
    for message in messages:
        for tool in (message.get("result") or {}).get("tools", []):
            names.add(tool["name"])
    return names


JSON = [(b"content-type", b"application/json")]


# --- 1. batch JSON response: an id the server rounded passes unfiltered ---


async def test_batch_json_list_with_rounded_id_is_filtered(nursery):
    big = 2**53 + 1
    batch = [
        {"jsonrpc": "2.0", "id": big, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]

    def js_server(request, body):  # what a TypeScript-SDK server in JSON mode answers
        answers = [tools_result(int(float(big))), {"jsonrpc": "2.0", "id": 2, "result": {}}]
        return 200, JSON, json.dumps(answers).encode()

    # No MCP-Protocol-Version header: the sidecar assumes 2025-03-26, where batches are allowed.
    _, response, data = await exchange(
        nursery, mcp_policy(), js_server, b"POST", b"/mcp", JSON, json.dumps(batch).encode()
    )
    assert response.status_code == 200
    assert "get_weather_alert" not in listed_names(json.loads(data))


# --- 2. the MCP endpoint under another spelling ---


async def test_mcp_endpoint_in_other_letter_case_is_judged(nursery):
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_weather_alert", "arguments": {"city": "x"}},
    }

    def case_insensitive_mcp_server(request, body):
        if request.target.lower().startswith(b"/mcp"):
            return 200, JSON, b'{"jsonrpc":"2.0","id":1,"result":{"content":[]}}'
        return 404, JSON, b"{}"

    app, response, _ = await exchange(
        nursery,
        mcp_policy(),
        case_insensitive_mcp_server,
        b"POST",
        b"/MCP",
        JSON,
        json.dumps(call).encode(),
    )
    assert app.received == [], "a tools/call for an ungranted tool reached the app"
    assert response.status_code == 403


def test_acl_and_mcp_layer_agree_on_what_the_mcp_endpoint_is():
    """The ACL lower-cases the path; the MCP layer must match the same spellings (and below)."""
    acl = parse_configuration(
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Configuration",
            "metadata": {"name": "c"},
            "spec": {
                "accessControl": {
                    "defaultAction": "deny",
                    "policies": [
                        {
                            "appId": "analyst-agent",
                            "trustDomain": "public",
                            "namespace": "default",
                            "defaultAction": "deny",
                            "operations": [
                                {"name": "/mcp", "httpVerb": ["POST"], "action": "allow"}
                            ],
                        }
                    ],
                }
            },
        }
    ).access_control
    request = InboundRequest(CALLER, ME, "POST", "MCP", {})
    assert evaluate_acl(acl, CALLER, "MCP", "POST").allowed  # the ACL sees /mcp
    assert mcp_policy().mcp_route_for(request) is not None  # and the MCP layer judges it
    below = InboundRequest(CALLER, ME, "POST", "Mcp/messages", {})
    assert mcp_policy().mcp_route_for(below) is not None
    elsewhere = InboundRequest(CALLER, ME, "POST", "mcpx", {})
    assert mcp_policy().mcp_route_for(elsewhere) is None


# --- 3. scope step-up skipped for items not named by params.name / params.uri ---


def _scope_check(message: dict):
    """Inspect the message as the sidecar does, then check scopes on the items it granted."""
    version = "2026-07-28" if message["method"] == "subscriptions/listen" else "2025-11-25"
    headers = {"mcp-protocol-version": version, "mcp-method": message["method"]}
    request = InboundRequest(CALLER, ME, "POST", "mcp", headers)
    verdict = mcp_route.judge_body(ROUTE, request, json.dumps(message).encode(), 1 << 20)
    assert verdict.allowed, verdict.decision  # the tool policy grants it; only scopes are missing
    assert verdict.items
    return bearer_gate.check_scopes(
        mcp_policy(),
        ROUTE,
        request,
        verdict.items,
        None,  # no verified token at all: every scope requirement must deny
    )


def test_scope_requirement_is_enforced_for_prompts_get():
    """Not xfail: the baseline — the same prompt by name is refused without its scope."""
    decision = _scope_check(
        {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "review"}}
    )
    assert decision is not None and not decision.allowed


def test_scope_requirement_is_enforced_for_completion_ref():
    decision = _scope_check(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "completion/complete",
            "params": {
                "ref": {"type": "ref/prompt", "name": "review"},
                "argument": {"name": "a", "value": ""},
            },
        }
    )
    assert decision is not None and not decision.allowed


def test_scope_requirement_is_enforced_for_subscriptions_listen():
    decision = _scope_check(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "subscriptions/listen",
            "params": {"notifications": {"resourceSubscriptions": ["secret://payroll"]}},
        }
    )
    assert decision is not None and not decision.allowed


# --- 4. headers the app may read as the sidecar's ---


def _echo_headers(request, body):
    return 200, JSON, json.dumps([[n.decode(), v.decode()] for n, v in request.headers]).encode()


async def test_underscore_spellings_of_identity_headers_never_reach_the_app(nursery):
    spoof = [(b"dapr_caller_app_id", b"admin-agent"), (b"x_trustmesh_subject", b"root")]
    app, response, _ = await exchange(
        nursery, InboundPolicy(version="1"), _echo_headers, b"GET", b"/echo", spoof
    )
    assert response.status_code == 200
    seen = {n.replace(b"_", b"-") for n, _ in app.received[0][0].headers if b"_" in n}
    assert not seen


async def test_method_override_headers_never_reach_the_app(nursery):
    headers = [(b"x-http-method-override", b"DELETE")]
    app, response, _ = await exchange(
        nursery, InboundPolicy(version="1"), _echo_headers, b"POST", b"/items/1", headers, b"{}"
    )
    assert response.status_code == 200
    assert all(n != b"x-http-method-override" for n, _ in app.received[0][0].headers)


# --- 5. error statuses bypass every response filter ---


async def test_list_result_under_an_error_status_is_filtered(nursery):
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]

    def server(request, body):  # answers the batch with 500 because one element failed
        answers = [
            tools_result(1),
            {"jsonrpc": "2.0", "id": 2, "error": {"code": -32603, "message": "boom"}},
        ]
        return 500, JSON, json.dumps(answers).encode()

    _, _response, data = await exchange(
        nursery, mcp_policy(), server, b"POST", b"/mcp", JSON, json.dumps(batch).encode()
    )
    assert "get_weather_alert" not in data.decode()


# --- 6. a stream judged under one policy version outlives it ---

REVOKED = parse_policy(
    {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "MCPServerAccessPolicy",
        "metadata": {"name": "mcp-server"},
        "spec": {
            "mcpServerRef": "mcp-server",
            "rules": [
                {
                    "callers": [{"appID": "analyst-agent"}],
                    "grants": [{"capability": "tools", "names": ["add"]}],  # echo revoked
                }
            ],
        },
    }
)


async def test_open_event_stream_follows_a_policy_reload(nursery):
    release = trio.Event()
    holder = [mcp_policy()]
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def sse_app(stream) -> None:
        conn = HttpConnection(stream, h11.SERVER)
        request = await conn.next_event()
        assert isinstance(request, h11.Request)
        await read_whole_body(conn, 1 << 20)
        await conn.send(
            h11.Response(
                status_code=200,
                headers=[
                    (b"content-type", b"text/event-stream"),
                    (b"transfer-encoding", b"chunked"),
                ],
            )
        )
        await conn.send(h11.Data(data=b": open\n\n"))
        await release.wait()
        replay = json.dumps(tools_result(7)).encode()  # a list replayed on the resumed stream
        await conn.send(h11.Data(data=b"event: message\ndata: " + replay + b"\n\n"))
        await conn.send(h11.EndOfMessage())

    nursery.start_soon(trio.serve_listeners, sse_app, listeners)
    proxy = InboundProxy(
        InboundConfig(me=ME, app_port=port),
        lambda: holder[0],
        AuditLog(None),
        SidecarMetrics(),
        nursery,
    )
    client_stream, server_stream = trio.testing.memory_stream_pair()
    client = HttpConnection(client_stream, h11.CLIENT)
    server = HttpConnection(server_stream, h11.SERVER)
    info = ConnectionInfo("10.0.0.9", 4444, peer_identity=CALLER)
    proxy.mcp_sessions.claim(CALLER, "s1")  # the caller's own session (issued earlier)

    async def serve_one() -> None:
        await proxy.handle(server, await server.next_event(), info)

    nursery.start_soon(serve_one)
    await client.send(
        h11.Request(
            method=b"GET",
            target=b"/mcp",
            headers=[
                (b"host", b"x"),
                (b"accept", b"text/event-stream"),
                (b"mcp-session-id", b"s1"),
            ],
        )
    )
    await client.send(h11.EndOfMessage())
    response = await client.next_event()
    assert response.status_code == 200
    first = await client.next_event()
    assert isinstance(first, h11.Data)
    holder[0] = InboundPolicy(version="2", mcp=McpRoute("mcp", REVOKED, "mcp-server"))  # revoke
    release.set()
    received = b""
    while True:
        event = await client.next_event()
        if isinstance(event, h11.Data):
            received += event.data
        else:
            break
    assert b'"echo"' not in received, received


# --- 7. pending list entries leak on every path that never reaches the response filter ---


async def test_failed_forwards_do_not_leave_pending_list_entries(nursery):
    dead = trio.socket.socket()
    await dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens: every forward fails with 503 AppUnavailable
    proxy = InboundProxy(
        InboundConfig(me=ME, app_port=port),
        lambda: mcp_policy(),
        AuditLog(None),
        SidecarMetrics(),
        nursery,
    )
    big_id = "x" * 100_000
    proxy.mcp_sessions.claim(CALLER, "s1")  # the caller's own session (issued earlier)
    for n in range(3):
        client_stream, server_stream = trio.testing.memory_stream_pair()
        client = HttpConnection(client_stream, h11.CLIENT)
        server = HttpConnection(server_stream, h11.SERVER)
        info = ConnectionInfo("10.0.0.9", 4444, peer_identity=CALLER)
        body = json.dumps({"jsonrpc": "2.0", "id": f"{big_id}{n}", "method": "tools/list"})

        async def serve_one(server=server, info=info) -> None:
            await proxy.handle(server, await server.next_event(), info)

        nursery.start_soon(serve_one)
        await client.send(
            h11.Request(
                method=b"POST",
                target=b"/mcp",
                headers=[
                    (b"host", b"x"),
                    (b"content-type", b"application/json"),
                    (b"mcp-session-id", b"s1"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
        )
        await client.send(h11.Data(data=body.encode()))
        await client.send(h11.EndOfMessage())
        response = await client.next_event()
        assert response.status_code == 503
        await read_whole_body(client, 1 << 20)
    assert len(proxy.mcp_sessions.get(CALLER, "s1")) == 0
