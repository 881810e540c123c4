"""#10.3: the decision holds when the request is forwarded.

Attack: a caller with a real mesh certificate sends the head of a granted ``tools/call``, lets
the server's sidecar judge it, and holds the body back; meanwhile the operator revokes the grant
(``mcpserver access revoke --wait``) or denies the caller in the ACL (``appid update
--app-config … --wait``). Then the body completes. The call must be judged by the policy in force
*then*: refused, and absent from the SDK server's own request log. Twin: the same call with no
policy change in between arrives and runs.

Deterministic, no waiting: the head carries ``Expect: 100-continue``, and the sidecar sends
``100 Continue`` only once the head has been judged and it wants the body — so the policy change
provably happens after the head's decision and before the body's last byte.
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest

from identity import AppIdentity, client_context
from tests._support.mcp_mesh import CLIENT_ID, McpMesh
from tests._support.pki import utcnow
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

SERVER_ID = "mcp-server"


class World:
    def __init__(self, mesh: McpMesh, server, log) -> None:
        self.mesh, self.server, self.log = mesh, server, log
        ca = mesh.mesh.ca
        svid = ca.issue(AppIdentity(ca.trust_domain, "default", CLIENT_ID), now=utcnow())
        self.tls = client_context(svid, ca.bundle)

    def held_back_call(self, body: bytes, between) -> tuple[int, bytes]:
        """POST ``body`` to the MCP endpoint over mTLS; run ``between()`` after the sidecar
        judged the head (its 100 Continue) and before the body is sent."""
        plain = socket.create_connection(self.server.address("inbound"), timeout=30)
        with self.tls.wrap_socket(plain) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nhost: mcp-server\r\n"
                b"content-type: application/json\r\n"
                b"accept: application/json, text/event-stream\r\n"
                b"mcp-protocol-version: 2025-06-18\r\n"
                b"expect: 100-continue\r\nconnection: close\r\n"
                + f"content-length: {len(body)}\r\n\r\n".encode()
            )
            interim = _read_head(sock)
            assert interim.startswith(b"HTTP/1.1 100"), interim
            between()
            sock.sendall(body)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), payload


def _read_head(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("decision-at-forward"), mesh_ca))
    try:
        server, log = mesh.logging_server("logging-server", mode="json", stateless=True)
        sidecar = mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
        mesh.tm("mcpserver", "create", SERVER_ID)
        mesh.tm("configuration", "create", "open", "--default-action", "allow")
        mesh.tm("configuration", "create", "closed", "--default-action", "deny")
        mesh.tm("appid", "update", SERVER_ID, "--app-config", "open", "--wait")
        mesh.grant(SERVER_ID, CLIENT_ID, "add,echo")
        yield World(mesh, sidecar, log)
    finally:
        killed = mesh.procs.stop_all()
        assert not killed, f"processes outlived SIGTERM: {killed}"


def echo_call() -> tuple[bytes, bytes]:
    marker = f"held-back-{uuid.uuid4().hex}".encode()
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": marker.decode()}},
        }
    ).encode()
    return body, marker


def test_held_back_call_with_no_policy_change_arrives(world):
    body, marker = echo_call()
    status, payload = world.held_back_call(body, lambda: None)
    assert status == 200, payload
    assert marker in payload
    assert world.log.received(body)


def test_grant_revoked_while_the_body_was_held_back_refuses_the_call(world):
    body, _ = echo_call()
    try:
        status, payload = world.held_back_call(
            body, lambda: world.mesh.revoke(SERVER_ID, CLIENT_ID)
        )
    finally:
        world.mesh.grant(SERVER_ID, CLIENT_ID, "add,echo")
    assert status == 403, payload
    assert "error" in json.loads(payload)
    assert not world.log.received(body)


def test_acl_deny_while_the_body_was_held_back_refuses_the_call(world):
    body, _ = echo_call()

    def close_the_door():
        world.mesh.tm("appid", "update", SERVER_ID, "--app-config", "closed", "--wait")

    try:
        status, payload = world.held_back_call(body, close_the_door)
    finally:
        world.mesh.tm("appid", "update", SERVER_ID, "--app-config", "open", "--wait")
    assert status == 403, payload
    assert json.loads(payload)["errorCode"] == "ERR_DIRECT_INVOKE"
    assert not world.log.received(body)


def test_the_grant_is_back_after_the_attacks(world):
    """The twin again, after the policy was restored: the refusals above were the policy's."""
    test_held_back_call_with_no_policy_change_arrives(world)
