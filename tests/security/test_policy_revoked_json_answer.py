"""A tool result answered as one JSON body after its grant was revoked never reaches the caller.

A revoked grant cuts a tool call answered on an SSE stream, and a stream whose head comes after
the change never starts. An MCP server may answer a tools/call with one JSON body instead (the
SDK's JSON response mode), sent only once the tool is done, minutes later for a slow tool. The
sidecar let such a "whole answer" through even when its head arrived after the grant was
revoked, so whether a revoked caller got its result depended on the server's response mode.
An answer whose head arrives after the cut, or whose body the sidecar is still reading when
the cut comes, is now refused like a stream that never started (403 ``ERR_POLICY_CHANGED``);
an answer already on its way to the caller is still let finish.

Twin: revoking another tool leaves the call's JSON result flowing to the caller.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests._support.mcp_mesh import CLIENT_ID

pytestmark = pytest.mark.e2e

SERVER = "slow-json-tools"
CALL_ADD = b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add","arguments":{}}}'


@pytest.fixture(scope="module")
def slow(mcp_mesh):
    fake = mcp_mesh.fake_upstream("slow-json-upstream")
    mcp_mesh.sidecar(SERVER, app_port=fake.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.register(SERVER)
    return mcp_mesh, client, fake


def _json_call_across(slow, revoke: str, scenario: bytes = b"gated-json") -> bytes:
    """As the caller, call ``add``; once the server holds the call, revoke the caller's grant
    of ``revoke`` (waiting until the sidecars apply it) and let the server answer: what the
    caller gets."""
    mesh, client, fake = slow
    mesh.grant(SERVER, CLIENT_ID, "add,echo")
    upstream = f"http://127.0.0.1:{fake.ready['port']}"
    host, port = client.url().removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(
            b"POST /v1.0/invoke/%s/method/mcp?scenario=%s HTTP/1.1\r\nhost: 127.0.0.1"
            b"\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream"
            b"\r\nmcp-protocol-version: 2025-06-18\r\ncontent-length: %d\r\n\r\n%s"
            % (SERVER.encode(), scenario, len(CALL_ADD), CALL_ADD)
        )
        try:
            assert httpx.get(f"{upstream}/held", timeout=15).json() == {"held": True}
            mesh.revoke(SERVER, CLIENT_ID, revoke)
        finally:
            httpx.get(f"{upstream}/release", timeout=5)
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _call_record(mesh) -> dict:
    log = mesh.home / "audit" / f"default.{SERVER}.jsonl"
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in log.read_text().splitlines()]
        found = [r for r in records if r.get("names") == ["add"]]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, records[-3:]
        time.sleep(0.05)


def test_a_json_tool_result_whose_grant_was_revoked_while_it_ran_never_arrives(slow):
    data = _json_call_across(slow, "add")
    assert data.startswith(b"HTTP/1.1 403 "), data
    assert b"the gated result" not in data and b"ERR_POLICY_CHANGED" in data, data
    record = _call_record(slow[0])
    assert (record["decision"], record["reason"]) == ("deny", "ERR_POLICY_CHANGED"), record
    assert record["layer"] == "mcp", record  # the layer that refuses it now, not "app"


def test_twin_a_json_tool_result_arrives_when_another_tools_grant_is_revoked(slow):
    data = _json_call_across(slow, "echo")
    assert data.startswith(b"HTTP/1.1 200 ") and b"the gated result" in data, data


# The head sent at once, the body only when the tool is done: the cut comes while the sidecar
# reads the body, before a byte of the answer has left for the caller.


def test_a_json_tool_result_whose_body_comes_after_the_revocation_never_arrives(slow):
    data = _json_call_across(slow, "add", b"gated-json-body")
    assert data.startswith(b"HTTP/1.1 403 "), data
    assert b"the gated result" not in data and b"ERR_POLICY_CHANGED" in data, data


def test_twin_a_json_tool_result_whose_body_comes_later_arrives_when_another_is_revoked(slow):
    data = _json_call_across(slow, "echo", b"gated-json-body")
    assert data.startswith(b"HTTP/1.1 200 ") and b"the gated result" in data, data
