"""#10.1: namespace + App ID is the identity in every MCP decision.

A grant for ``mcp-client`` means ``mcp-client`` in the MCP server's own namespace (``default``),
never the App ID in any namespace: ``spiffe://public/ns/dev/mcp-client`` holds a certificate of
the same CA and the same App ID, and must get nothing from it. Each attack is paired with its
twin from ``default/mcp-client``, through real sidecars, against the official SDK's server that
writes down every request it receives (``mcp_logging_server``); a refused body is proven absent
from that log. The ACL (Dapr ``accessControl``) is checked the same way.
"""

from __future__ import annotations

import pytest
import yaml

from tests._support.mcp_attack import Caller, call, encode, request, sidecar_in

pytestmark = pytest.mark.e2e

SERVER_ID = "mcp-server"
CLIENT_ID = "mcp-client"


@pytest.fixture(scope="module")
def world(mcp_mesh):
    server, log = mcp_mesh.logging_server("logging-server", mode="json", stateless=True)
    mcp_mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
    home_caller = sidecar_in(mcp_mesh, CLIENT_ID, "default")
    dev_caller = sidecar_in(mcp_mesh, CLIENT_ID, "dev")
    mcp_mesh.tm("mcpserver", "create", SERVER_ID)
    callers = {
        "default": Caller(home_caller, SERVER_ID),
        "dev": Caller(dev_caller, f"{SERVER_ID}.default"),
    }
    yield mcp_mesh, log, callers
    for caller in callers.values():
        caller.close()


def policy(mesh, *grants: tuple[str, str]) -> None:
    """Replace the server's policy with one rule per ``(caller, tools)``; wait until enforced.

    ``caller`` is written as the CLI takes it (``app``, ``ns/app``), and lands in the document as
    ``appID`` plus, only when written, ``namespace``.
    """
    rules = []
    for who, tools in grants:
        namespace, _, app_id = who.rpartition("/")
        caller = {"appID": app_id, **({"namespace": namespace} if namespace else {})}
        grant = {"capability": "tools", "names": tools.split(",")}
        rules.append({"callers": [caller], "grants": [grant]})
    document = {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "MCPServerAccessPolicy",
        "metadata": {"name": SERVER_ID},
        "spec": {"mcpServerRef": SERVER_ID, "rules": rules},
    }
    path = mesh.root / "namespaces-policy.yaml"
    path.write_text(yaml.safe_dump(document))
    mesh.tm("apply", "-f", str(path), "--wait")


def ran(response, text: str) -> None:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is False and result["content"][0]["text"] == text, result


def refused(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"], response.text


def test_grant_for_an_app_id_does_not_serve_the_same_app_id_in_another_namespace(world):
    mesh, log, callers = world
    policy(mesh, (CLIENT_ID, "add,echo"))
    attack = encode(call("ns-attack", "add", {"a": 40, "b": 2}))
    legit = encode(call("ns-legit", "add", {"a": 40, "b": 2}))
    refused(callers["dev"].post(attack), 403, "caller 'dev/mcp-client' holds no grant")
    ran(callers["default"].post(legit), "42")
    assert legit in log.bodies() and attack not in log.bodies()


def test_tools_list_in_another_namespace_is_refused_not_filtered_to_the_twin_grants(world):
    mesh, log, callers = world
    policy(mesh, (CLIENT_ID, "add,echo"))
    attack = encode(request("ns-list-attack", "tools/list"))
    legit = encode(request("ns-list-legit", "tools/list"))
    refused(callers["dev"].post(attack), 403, "holds no grant")
    response = callers["default"].post(legit)
    assert sorted(t["name"] for t in response.json()["result"]["tools"]) == ["add", "echo"]
    assert legit in log.bodies() and attack not in log.bodies()


def test_explicit_namespace_grant_serves_only_that_namespace(world):
    mesh, log, callers = world
    policy(mesh, (CLIENT_ID, "add"), ("dev/mcp-client", "echo"))
    dev_attack = encode(call("dev-add", "add", {"a": 1, "b": 1}))
    home_attack = encode(call("home-echo", "echo", {"message": "not yours"}))
    refused(callers["dev"].post(dev_attack), 403, "tool 'add' is not granted to caller 'dev/")
    refused(callers["default"].post(home_attack), 403, "tool 'echo' is not granted")
    ran(callers["dev"].post(encode(call("dev-echo", "echo", {"message": "hi dev"}))), "hi dev")
    ran(callers["default"].post(encode(call("home-add", "add", {"a": 1, "b": 1}))), "2")
    bodies = log.bodies()
    assert dev_attack not in bodies and home_attack not in bodies


def test_wildcard_app_id_stays_in_the_servers_namespace_unless_the_namespace_is_written(world):
    mesh, log, callers = world
    policy(mesh, ("*", "echo"))
    attack = encode(call("star-dev", "echo", {"message": "from dev"}))
    refused(callers["dev"].post(attack), 403, "holds no grant")
    ran(callers["default"].post(encode(call("star-home", "echo", {"message": "x"}))), "x")
    assert attack not in log.bodies()
    policy(mesh, ("*/*", "echo"))  # written out: any namespace
    ran(callers["dev"].post(encode(call("star-any", "echo", {"message": "ok"}))), "ok")


def test_namespace_wildcard_with_cli_flag(world):
    mesh, _log, callers = world
    policy(mesh)
    mesh.tm("mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
            "--caller-namespace", "*", "--allow-tools", "add", "--wait")  # fmt: skip
    ran(callers["dev"].post(encode(call("nsflag-dev", "add", {"a": 2, "b": 2}))), "4")
    ran(callers["default"].post(encode(call("nsflag-home", "add", {"a": 3, "b": 3}))), "6")


ACL = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: mcp-server-acl
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - appId: mcp-client
        defaultAction: allow
        trustDomain: public
        namespace: default
"""


def test_acl_allowing_an_app_id_in_one_namespace_denies_it_in_another(world, tmp_path):
    mesh, log, callers = world
    policy(mesh, ("*/*", "add"))  # the MCP layer would let both through: the ACL decides
    path = tmp_path / "acl.yaml"
    path.write_text(ACL)
    mesh.tm("apply", "-f", str(path))
    mesh.tm("appid", "update", SERVER_ID, "--app-config", "mcp-server-acl", "--wait")
    try:
        attack = encode(call("acl-dev", "add", {"a": 5, "b": 5}))
        response = callers["dev"].post(attack)
        assert response.status_code == 403, response.text
        assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"
        assert "spiffe://public/ns/dev/mcp-client" in response.json()["message"]
        ran(callers["default"].post(encode(call("acl-home", "add", {"a": 5, "b": 5}))), "10")
        assert attack not in log.bodies()
    finally:
        mesh.tm("configuration", "create", "open", "--default-action", "allow")
        mesh.tm("appid", "update", SERVER_ID, "--app-config", "open", "--wait")
