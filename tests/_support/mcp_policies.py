"""Shared policies and message builders for the MCP unit tests."""

from __future__ import annotations

import json

from sidecar.mcp import parse_policy

DOC = {
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
                    {"capability": "resources", "names": ["file:///ok.txt", "db://{table}"]},
                    {"capability": "prompts", "names": ["review"], "requiredScopes": ["p.read"]},
                ],
            },
            {
                "callers": [{"appID": "reader"}],
                "grants": [{"capability": "resources", "names": ["file:///ok.txt"]}],
            },
        ],
    },
}
POLICY = parse_policy(DOC)
CALLER = "analyst-agent"


def body(message) -> bytes:
    return json.dumps(message).encode()


def req(method: str, params: dict | None = None, id_=1) -> dict:
    message = {"jsonrpc": "2.0", "id": id_, "method": method}
    if params is not None:
        message["params"] = params
    return message
