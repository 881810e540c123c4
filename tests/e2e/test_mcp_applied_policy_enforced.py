"""#14: a policy applied for an App ID that was not registered as an MCP server is enforced.

On main, ``apply -f`` stored the policy and registered nothing: ``access test`` said DENIED while
the real call ran. Now applying the policy registers its server in the same change, so the
sidecar enforces exactly what ``access test`` predicts — shown with a real sidecar in front of
the official SDK server, whose request log proves the denied call never arrived.
"""

from __future__ import annotations

import pytest
import yaml

from tests._support.mcp_attack import Caller, call, encode, request
from tests._support.mcp_mesh import CLIENT_ID

pytestmark = pytest.mark.e2e

SERVER_ID = "mcp-server"
POLICY = {
    "apiVersion": "trustmesh.dev/v1alpha1",
    "kind": "MCPServerAccessPolicy",
    "metadata": {"name": SERVER_ID},
    "spec": {
        "mcpServerRef": SERVER_ID,
        "rules": [
            {
                "callers": [{"appID": CLIENT_ID}],
                "grants": [{"capability": "tools", "names": ["add"]}],
            }
        ],
    },
}


def test_applied_policy_for_an_unregistered_server_is_what_the_sidecar_enforces(mcp_mesh, tmp_path):
    server, log = mcp_mesh.logging_server("logging-server", mode="json", stateless=True)
    mcp_mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
    client = Caller(mcp_mesh.sidecar(CLIENT_ID), SERVER_ID)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(POLICY))
    mcp_mesh.tm("apply", "-f", str(path), "--wait")
    predicted = mcp_mesh.tm("mcpserver", "access", "test", SERVER_ID, "--caller", CLIENT_ID,
                            "--tool", "get_weather_alert", check=False)  # fmt: skip
    assert predicted.returncode == 1 and predicted.stdout.startswith("DENIED: ")
    assert "warning" not in predicted.stderr  # registered, running, up to date: enforced
    attack = encode(call("applied-1", "get_weather_alert", {"city": "Paris"}))
    legit = encode(call("applied-2", "add", {"a": 2, "b": 2}))
    denied = client.post(attack)
    assert denied.status_code == 403, denied.text
    assert client.post(legit).json()["result"]["content"][0]["text"] == "4"
    assert legit in log.bodies() and attack not in log.bodies()
    client.close()


def test_grant_naming_a_tool_the_server_never_listed_is_warned_about(mcp_mesh):
    client = Caller(next(p for p in mcp_mesh.procs.procs if p.name == f"sidecar-{CLIENT_ID}"),
                    SERVER_ID)  # fmt: skip
    listed = client.post(request("seen", "tools/list"))  # the sidecar notes what the server has
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["add"]
    result = mcp_mesh.tm("mcpserver", "access", "grant", SERVER_ID, "--caller", CLIENT_ID,
                         "--allow-tools", "ech,add")  # fmt: skip
    assert (
        "has not listed a tool 'ech'" in result.stderr and "did you mean 'echo'?" in result.stderr
    )
    assert "'add'" not in result.stderr.split("'ech'")[0]  # a listed tool is no typo
    client.close()
