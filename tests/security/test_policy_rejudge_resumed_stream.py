"""A resumed MCP GET stream, judged again when a new policy is applied.

The server→client GET stream of a session (resumed with ``Last-Event-ID``) is the longest-lived
exchange an MCP caller holds. Attack: the caller loses every grant on the server while its
stream is open; the stream must stop, and the notification the server sends afterwards must
never reach the caller. Twin: a policy change that does not concern the caller (another App
granted a tool) leaves the stream flowing, even after the stream has relayed more event ids
than the sidecar remembers per caller, so the id it resumed from is forgotten (the sidecar
used to judge that forgotten id again and cut the stream with a 404 the policy never asked
for).
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tests._support.fake_mcp_upstream import LONG_REPLAY
from tests._support.gated_stream import rest_of_gated_stream
from tests._support.mcp_mesh import CLIENT_ID, invoke_url

pytestmark = pytest.mark.e2e

SERVER = "resumed-tools"
VERSION = "2025-11-25"
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def resumed(mcp_mesh):
    fake = mcp_mesh.fake_upstream("resumed-upstream")
    mcp_mesh.sidecar(SERVER, app_port=fake.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.register(SERVER)
    return mcp_mesh, client, fake


def _session_with_a_long_replay(url: str) -> str:
    """A session of the caller's whose stored stream is an id-only event then LONG_REPLAY
    notifications (the POST delivers only the first)."""
    headers = {**ACCEPT, "mcp-protocol-version": VERSION}
    with httpx.Client(timeout=15) as http:
        init = {"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {}}
        opened = http.post(url, json=init, headers=headers)
        assert opened.status_code == 200, opened.text
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        cut = http.post(
            url,
            params={"scenario": "resume-long"},
            json=listing,
            headers={**headers, "mcp-session-id": session},
        )
        assert cut.status_code == 200 and f"id: {session}-0".encode() in cut.content, cut.content
    return session


def _resumed_stream_across(resumed, change) -> tuple[bytes, bool]:
    """Resume the caller's session stream from its first event (the server replays the rest,
    then holds the stream), apply ``change`` once all of it arrived, release the server: what
    else arrives, and whether the stream was closed before it."""
    mesh, client, fake = resumed
    mesh.grant(SERVER, CLIENT_ID, "add,echo")
    url = invoke_url(client, SERVER)
    session = _session_with_a_long_replay(url)
    path = url.split("/", 3)[3]
    host, port = client.url().removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"GET /%s?scenario=gated HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
            b"mcp-protocol-version: %s\r\nmcp-session-id: %s\r\nlast-event-id: %s-0\r\n\r\n"
            % (path.encode(), VERSION.encode(), session.encode(), session.encode())
        )
        last = f"id: {session}-{LONG_REPLAY}\n".encode()
        data = b""
        while last not in data:  # the whole replay was relayed: the resumed-from id forgotten
            chunk = sock.recv(65536)
            assert chunk, data[-2000:]
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 "), data[:300]
        try:
            change(mesh)
        finally:
            httpx.get(f"http://127.0.0.1:{fake.ready['port']}/release", timeout=5)
        return rest_of_gated_stream(sock, 10, until=b"the gated result")


def _cut_stream_record(mesh) -> dict:
    """The server sidecar's audit record of the cut GET stream (written soon after its end)."""
    log = mesh.home / "audit" / f"default.{SERVER}.jsonl"
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in log.read_text().splitlines()]
        found = [r for r in records if r.get("verb") == "GET" and r.get("cut")]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, records[-3:]
        time.sleep(0.05)


def test_a_resumed_get_stream_is_cut_when_its_caller_loses_every_grant(resumed):
    rest, closed = _resumed_stream_across(resumed, lambda m: m.revoke(SERVER, CLIENT_ID))
    assert closed and b"the gated result" not in rest, rest
    record = _cut_stream_record(resumed[0])
    assert record["cut"].startswith("ERR_POLICY_CHANGED: the policy applied"), record
    assert "session_refused" in record["cut"], record


def test_twin_a_long_resumed_get_stream_goes_on_when_another_app_is_granted_a_tool(resumed):
    rest, closed = _resumed_stream_across(
        resumed, lambda m: m.grant(SERVER, "another-agent", "echo")
    )
    assert b"the gated result" in rest and not closed, rest
