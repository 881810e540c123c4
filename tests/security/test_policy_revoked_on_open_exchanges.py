"""A grant revoked while an exchange is under way ends that exchange.

The judge decides a request once, when it arrives. An SSE stream or an upload is one request
that may last hours: an operator who revokes a caller's access (an ACL edit, a tool grant
removed) expects that caller to stop being served, not to keep the stream it opened before.
The inbound sidecar now judges every exchange under way again when a new policy is applied, as
the same request would be judged if it arrived then, and cuts the ones refused:

* **A stream** opened under an ACL that allowed the caller is cut when an ACL that denies it is
  applied: nothing the app sends afterwards reaches the caller, and the audit record says why
  (``ERR_POLICY_CHANGED``).
* **A stream whose head the app sends only after the change** never starts: the caller gets
  403 ``ERR_POLICY_CHANGED``.
* **An upload** (a chunked body streamed to the app) stops reaching the app.
* **A tool call answered on an SSE stream** (MCP) is cut when its tool grant is revoked: the
  result the server sends afterwards never reaches the caller.

Twins: a policy change that still allows the caller (another App added to the ACL, another
tool revoked) leaves the stream, the held stream, the upload and the tool call flowing. The
app's own counters (what ``/count`` and ``/sunk`` saw) and the bytes the caller received prove
what arrived.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from tests._support.gated_stream import rest_of_gated_stream, trickle_upload
from tests._support.in_process import audit_path, last_record, new_policy_in_force
from tests._support.mcp_mesh import CLIENT_ID
from tests.security.test_identity_on_kept_connections import KeptConnection, _svid
from tests.security.test_k8s_identity_map_attacks import ALLOW_ONLY_CLIENT, World

pytestmark = pytest.mark.e2e

# The same Configuration with the client's grant revoked, and with another App's grant added.
REVOKED = ALLOW_ONLY_CLIENT.replace(
    "{appId: mcp-client, defaultAction: allow", "{appId: mcp-client, defaultAction: deny"
)
WIDENED = ALLOW_ONLY_CLIENT + (
    "      - {appId: other, defaultAction: allow, trustDomain: public, namespace: default}\n"
)


@pytest.fixture
def world(tmp_path, mesh_ca):
    world = World(tmp_path, mesh_ca)
    world.apply("config.yaml", ALLOW_ONLY_CLIENT)
    yield world
    killed = world.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def _server(world):
    app = world.procs.app()
    server = world.sidecar(
        "server", ("ns", "default", "sa", "server"), app_port=app.ready["port"],
        extra=["--config", "only-client"],
    )  # fmt: skip
    return app, server


def _app(app, route: str) -> dict:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/{route}", timeout=5).json()


def _apply_and_wait(world, server, config: str) -> None:
    """Apply ``config`` and wait until the server sidecar reports the new policy in force
    (it cuts the exchanges the policy refuses in the same step that puts it in force)."""
    with new_policy_in_force(server):
        world.apply("config.yaml", config)


def _stream_across(world, config: str) -> tuple[bytes, bool]:
    """Open the gated stream as mcp-client, apply ``config``, release the app: what else
    arrives, and whether the sidecar closed the stream."""
    app, server = _server(world)
    kept = KeptConnection(
        _svid(world, "client", ("ns", "default", "mcp-client")), server.ready["inbound"]
    )
    try:
        kept.open_stream()  # judged and allowed; the app holds its second event back
        _apply_and_wait(world, server, config)
        _app(app, "release")
        return kept.rest_of_stream(timeout=10)
    finally:
        _app(app, "release")
        kept.close()


def test_a_stream_is_cut_when_the_callers_acl_grant_is_revoked(world):
    data, closed = _stream_across(world, REVOKED)
    assert closed and b"data: second" not in data, data
    record = last_record(audit_path(world.home, "server"), "sse-gated")
    assert (record["decision"], record["status"]) == ("allow", 200), record
    assert record["cut"].startswith("ERR_POLICY_CHANGED: the policy applied"), record


def test_twin_a_stream_goes_on_when_the_new_policy_still_allows_its_caller(world):
    data, closed = _stream_across(world, WIDENED)
    assert b"data: second" in data and not closed, data
    assert last_record(audit_path(world.home, "server"), "sse-gated")["cut"] is None


def _held_answer_across(world, config: str) -> bytes:
    """GET the app's held stream as mcp-client, apply ``config`` once the app has the request
    (judged and forwarded; the app holds its head), release the app: what the caller gets."""
    app, server = _server(world)
    svid = _svid(world, "client", ("ns", "default", "mcp-client"))
    kept = KeptConnection(svid, server.ready["inbound"])
    try:
        before = _app(app, "count")["count"]
        kept.sock.sendall(b"GET /sse-held HTTP/1.1\r\nhost: server\r\n\r\n")
        deadline = time.monotonic() + 10
        while _app(app, "count")["count"] == before:
            assert time.monotonic() < deadline, "the request never reached the app"
            time.sleep(0.05)
        _apply_and_wait(world, server, config)
        _app(app, "release")
        kept.sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data or (data.startswith(b"HTTP/1.1 403 ") and b"}" not in data):
            chunk = kept.sock.recv(65536)  # the head, and a refusal's whole JSON body
            assert chunk, data
            data += chunk
        return data
    finally:
        _app(app, "release")
        kept.close()


def test_a_stream_whose_head_comes_after_the_grant_was_revoked_never_starts(world):
    data = _held_answer_across(world, REVOKED)
    assert data.startswith(b"HTTP/1.1 403 ") and b"data: held" not in data, data
    assert b"ERR_POLICY_CHANGED" in data, data  # the change cut it: no ACL denial of a new request


def test_twin_a_held_stream_starts_when_the_new_policy_still_allows_its_caller(world):
    data = _held_answer_across(world, WIDENED)
    assert data.startswith(b"HTTP/1.1 200 "), data


def _upload_across(world, config: str) -> tuple[int, int, int]:
    """Trickle a body to the app as mcp-client and apply ``config`` once the app has read part
    of it: (the caller's status, bytes it sent, bytes the app read)."""
    app, server = _server(world)
    kept = KeptConnection(
        _svid(world, "client", ("ns", "default", "mcp-client")), server.ready["inbound"]
    )
    outcome: list[tuple[int, int]] = []
    caller = threading.Thread(
        target=lambda: outcome.append(trickle_upload(kept.sock, seconds=3)), daemon=True
    )
    try:
        caller.start()
        deadline = time.monotonic() + 10
        while _app(app, "sunk")["size"] == 0:  # under way: the app has read its first chunk
            assert time.monotonic() < deadline, "the upload never reached the app"
            time.sleep(0.05)
        _apply_and_wait(world, server, config)
        in_flight = caller.is_alive()  # cut or not, the policy came while the body flowed
        caller.join(30)
        assert in_flight, "the upload ended before the policy applied"
    finally:
        kept.close()
    (status, sent), *_ = outcome
    return status, sent, _app(app, "sunk")["size"]


def test_an_upload_is_cut_when_the_callers_acl_grant_is_revoked(world):
    status, sent, sunk = _upload_across(world, REVOKED)
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert sunk < sent  # what came after the cut never reached the app


def test_twin_an_upload_goes_on_when_the_new_policy_still_allows_its_caller(world):
    status, sent, sunk = _upload_across(world, WIDENED)
    assert status == 200 and sunk == sent


# -- a tool call answered on an SSE stream, whose tool grant is revoked while it streams ------

GATED_SERVER = "gated-tools"
CALL_ADD = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}'


@pytest.fixture(scope="module")
def gated(mcp_mesh):
    """A scripted MCP server whose ``scenario=gated`` answer holds its result back until
    released, behind its sidecar; the caller's sidecar; the server registered."""
    fake = mcp_mesh.fake_upstream("gated-upstream")
    mcp_mesh.sidecar(GATED_SERVER, app_port=fake.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.register(GATED_SERVER)
    return mcp_mesh, client, fake


def _tool_call_across(gated, revoke: str) -> tuple[bytes, bool]:
    """As the caller, call ``add`` and read up to the stream's first event; revoke the
    caller's grant of ``revoke`` (waiting until the sidecars apply it); release the server:
    what else arrives, and whether the stream was closed before its result."""
    mesh, client, fake = gated
    mesh.grant(GATED_SERVER, CLIENT_ID, "add,echo")
    host, port = client.url().removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1.0/invoke/%s/method/mcp?scenario=gated HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"content-type: application/json\r\naccept: application/json, text/event-stream\r\n"
            b"mcp-protocol-version: 2025-06-18\r\ncontent-length: %d\r\n\r\n%s"
            % (GATED_SERVER.encode(), len(CALL_ADD), CALL_ADD)
        )
        data = b""
        while b"listing tools" not in data:  # the call was judged and its stream is open
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        try:
            mesh.revoke(GATED_SERVER, CLIENT_ID, revoke)
        finally:
            httpx.get(f"http://127.0.0.1:{fake.ready['port']}/release", timeout=5)
        return rest_of_gated_stream(sock, 10, until=b"the gated result")


def test_a_streamed_tool_call_is_cut_when_its_tool_grant_is_revoked(gated):
    rest, closed = _tool_call_across(gated, "add")
    assert closed and b"the gated result" not in rest, rest
    record = last_record(audit_path(gated[0].home, GATED_SERVER), "mcp")
    assert record["names"] == ["add"], record
    assert record["cut"].startswith("ERR_POLICY_CHANGED: the policy applied"), record


def test_twin_a_streamed_tool_call_goes_on_when_another_tools_grant_is_revoked(gated):
    rest, closed = _tool_call_across(gated, "echo")
    assert b"the gated result" in rest and not closed, rest
