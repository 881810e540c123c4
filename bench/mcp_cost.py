"""What the MCP policy adds per request on the server sidecar: the judge's calls, timed in-process.

    .venv/bin/python -m bench.mcp_cost [N]

Runs N times what the receiving sidecar's judge and response filter do for ``make bench``'s
trustmesh+mcp request (the same ~190-byte ``tools/call`` for a granted tool, the same JSON
answer): ``judge.head`` → ``judge.body`` → the response plan → the filter's ``feed``. The same
request to an app *not* registered as an MCP server (the no-policy path, whose small body the
judge reads too) gives the baseline, so the difference is the MCP policy's own CPU, without
sockets, TLS or audit in the way. A third line does the same for ``tools/list`` (the response
filtered by id and by content). Prints process CPU per request (``time.process_time``), so
other load on the machine barely moves it.
"""

from __future__ import annotations

import sys
import time

import h11

from identity import AppIdentity
from sidecar.judge import Forward, InboundJudge, InboundSite, ReadBody
from sidecar.mcp import parse_policy
from sidecar.mcp.sessions import McpSessions
from sidecar.pipeline import InboundPolicy, McpRoute

from .load import REQUEST_BODY
from .topology import APP_RESPONSE, BENCH_TOOL, MCP_CLIENT_ID, MCP_SERVER_ID

ME = AppIdentity("public", "default", MCP_SERVER_ID)
CALLER = AppIdentity("public", "default", MCP_CLIENT_ID)
POLICY = parse_policy(
    {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "MCPServerAccessPolicy",
        "metadata": {"name": MCP_SERVER_ID},
        "spec": {
            "rules": [
                {
                    "callers": [{"appID": MCP_CLIENT_ID}],
                    "grants": [{"capability": "tools", "names": [BENCH_TOOL]}],
                }
            ]
        },
    }
)
LIST_BODY = b'{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}'
LIST_RESPONSE = (
    b'{"jsonrpc":"2.0","id":2,"result":{"tools":['
    b'{"name":"get_forecast","description":"Weather","inputSchema":{"type":"object"}},'
    b'{"name":"delete_all","description":"Danger","inputSchema":{"type":"object"}}]}}'
)
RESPONSE = h11.Response(
    status_code=200,
    headers=[(b"content-type", b"application/json"), (b"content-length", b"143")],
)


def _request(body: bytes, method: str) -> h11.Request:
    return h11.Request(
        method=b"POST",
        target=b"/mcp",
        headers=[
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json, text/event-stream"),
            (b"mcp-protocol-version", b"2026-07-28"),
            (b"mcp-method", method.encode()),
            *([(b"mcp-name", BENCH_TOOL.encode())] if method == "tools/call" else []),
            (b"content-length", str(len(body)).encode()),
        ],
    )


def judge_for(mcp: bool) -> InboundJudge:
    route = McpRoute("mcp", POLICY, MCP_SERVER_ID) if mcp else None
    policy = InboundPolicy(version="1", mcp=route)
    return InboundJudge(InboundSite(ME, 8000), lambda: policy, McpSessions(), lambda: None)


def one(judge: InboundJudge, request: h11.Request, body: bytes, answer: bytes) -> bytes:
    verdict = judge.head(request, CALLER, None, "127.0.0.1", 1.0)
    assert isinstance(verdict, ReadBody), verdict
    verdict = judge.body(verdict, body, 1.0)
    assert isinstance(verdict, Forward), verdict
    planner = verdict.plan.response_plan
    if planner is None:
        return answer
    response_filter = planner(RESPONSE)
    return response_filter.feed(answer) + response_filter.finish()


def per_request_us(mcp: bool, body: bytes, method: str, answer: bytes, n: int) -> float:
    judge, request = judge_for(mcp), _request(body, method)
    one(judge, request, body, answer)  # warm caches, check it is allowed
    start = time.process_time()
    for _ in range(n):
        one(judge, request, body, answer)
    return (time.process_time() - start) / n * 1e6


def main(n: int) -> None:
    call, answer = REQUEST_BODY.encode(), APP_RESPONSE.encode()
    base = per_request_us(False, call, "tools/call", answer, n)
    mcp = per_request_us(True, call, "tools/call", answer, n)
    listed = per_request_us(True, LIST_BODY, "tools/list", LIST_RESPONSE, n)
    print(f"no MCP policy, tools/call   {base:6.1f} µs CPU per request (judge only)")
    print(f"MCP policy,    tools/call   {mcp:6.1f} µs  (+{mcp - base:.1f} for the MCP policy)")
    print(f"MCP policy,    tools/list   {listed:6.1f} µs  (list filtered by id and content)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
