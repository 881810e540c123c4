"""``trustmesh mcpserver …`` and ``apply`` for MCP policies: what you see is what is enforced (#14).

Each test replays the situation the issue describes with the real command line (a subprocess
on a temporary home), and would fail on main: there ``apply`` stored a policy for an unregistered
server silently, ``grant --required-scopes`` left an older unscoped grant deciding, ``access test``
ignored scopes, and ``mcpserver delete``/``list``, ``--endpoint``, ``--caller ns/app`` and the
warnings did not exist.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests._support.procs import REPO


@pytest.fixture
def tm(tmp_path):
    home = tmp_path / "home"

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "sidecar", *args, "--home", str(home)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
        return result

    run.home = home
    return run


def policy_file(tmp_path, name: str, server: str | None = None, namespace: str | None = None):
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    document = {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "MCPServerAccessPolicy",
        "metadata": metadata,
        "spec": {
            "mcpServerRef": server or name,
            "rules": [
                {
                    "callers": [{"appID": "analyst-agent"}],
                    "grants": [{"capability": "tools", "names": ["add"]}],
                }
            ],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


# --- apply --------------------------------------------------------------------------------------


def test_apply_of_a_policy_for_an_unregistered_server_registers_it(tm, tmp_path):
    tm("apply", "-f", str(policy_file(tmp_path, "mcp-server")))
    binding = yaml.safe_load(
        (tm.home / "resources" / "appids" / "default" / "mcp-server.yaml").read_text()
    )
    assert binding["mcpServer"]["path"] == "/mcp"
    listed = tm("mcpserver", "list").stdout
    assert "mcp-server" in listed and "/mcp" in listed


def test_apply_of_a_policy_named_apart_from_its_server_is_refused(tm, tmp_path):
    result = tm("apply", "-f", str(policy_file(tmp_path, "tools-policy", "mcp-server")), code=1)
    assert "set metadata.name to 'mcp-server'" in result.stderr
    assert not (tm.home / "resources" / "mcpserverpolicies" / "tools-policy.yaml").exists()


# --- scopes -------------------------------------------------------------------------------------


def test_grant_with_scopes_on_a_tool_held_without_is_refused_and_replace_moves_it(tm):
    tm("mcpserver", "create", "mcp-server")
    tm("mcpserver", "access", "grant", "mcp-server", "--caller", "analyst-agent",
       "--allow-tools", "add,echo")  # fmt: skip
    refused = tm("mcpserver", "access", "grant", "mcp-server", "--caller", "analyst-agent",
                 "--allow-tools", "add", "--required-scopes", "mcp.add", code=1)  # fmt: skip
    assert "already holds tool 'add' without required scopes" in refused.stderr
    assert "--replace" in refused.stderr
    before = tm("mcpserver", "access", "get", "mcp-server").stdout
    assert "scopes" not in before  # nothing was written
    moved = tm("mcpserver", "access", "grant", "mcp-server", "--caller", "analyst-agent",
               "--allow-tools", "add", "--required-scopes", "mcp.add",
               "--replace").stdout  # fmt: skip
    rule_lines = [line for line in moved.splitlines() if line.strip().startswith("rules[")]
    assert rule_lines == [
        "  rules[0] callers=analyst-agent tools=echo; tools=add (scopes: mcp.add)"
    ]
    test = tm("mcpserver", "access", "test", "mcp-server", "--caller", "analyst-agent",
              "--tool", "add").stdout  # fmt: skip
    assert test.startswith("ALLOWED only with scope mcp.add: tool 'add' is granted")


@pytest.mark.parametrize(
    ("scopes", "code", "start"),
    [("mcp.add", 0, "ALLOWED: "), ("other,mcp.add", 0, "ALLOWED: "),
     ("other", 1, "DENIED: "), ("", 1, "DENIED: ")],
)  # fmt: skip
def test_access_test_with_scopes_decides_like_the_sidecar(tm, scopes, code, start):
    tm("mcpserver", "create", "mcp-server")
    tm("mcpserver", "access", "grant", "mcp-server", "--caller", "analyst-agent",
       "--allow-tools", "add", "--required-scopes", "mcp.add")  # fmt: skip
    out = tm("mcpserver", "access", "test", "mcp-server", "--caller", "analyst-agent",
             "--tool", "add", "--scopes", scopes, code=code).stdout  # fmt: skip
    assert out.startswith(start), out
    if code:
        assert "the token lacks mcp.add" in out


def test_cli_scope_rule_is_the_bearer_layers():
    from sidecar.bearer.decision import scope_decision
    from sidecar.bearer.validate import VerifiedToken
    from sidecar.cli_mcp import missing_scopes

    cases = [(("a",), ()), (("a", "b"), ("b",)), (("a",), ("a", "c")), (("a", "a"), ("a",))]
    for needed, held in cases:
        token = VerifiedToken("s", frozenset(held), {}, "k", "https://issuer", "RS256")
        assert (not missing_scopes(needed, held)) is scope_decision(token, needed).allowed


# --- namespaces, warnings, server lifecycle ------------------------------------------------


def test_caller_namespace_forms_are_one_and_the_same(tm):
    tm("mcpserver", "create", "mcp-server")
    tm("mcpserver", "access", "grant", "mcp-server", "--caller", "dev/analyst-agent",
       "--allow-tools", "add")  # fmt: skip
    tm("mcpserver", "access", "test", "mcp-server", "--caller", "analyst-agent",
       "--caller-namespace", "dev", "--tool", "add")  # fmt: skip
    denied = tm("mcpserver", "access", "test", "mcp-server", "--caller", "analyst-agent",
                "--tool", "add", code=1).stdout  # fmt: skip
    assert "not granted to caller 'analyst-agent'" in denied
    document = yaml.safe_load(tm("mcpserver", "access", "get", "mcp-server", "-o", "yaml").stdout)
    assert document["spec"]["rules"][0]["callers"] == [
        {"appID": "analyst-agent", "namespace": "dev"}
    ]


def test_unknown_caller_is_kept_with_a_warning_naming_the_closest_known(tm):
    tm("mcpserver", "create", "mcp-server")
    tm("appid", "update", "analyst-agent", "--app-config", "")
    result = tm("mcpserver", "access", "grant", "mcp-server", "--caller", "analyst-agnet",
                "--allow-tools", "add")  # fmt: skip
    assert "did you mean 'analyst-agent'?" in result.stderr
    assert "callers=analyst-agnet" in result.stdout  # accepted: apps may start later


def test_access_commands_say_when_nothing_enforces_the_policy(tm):
    tm("mcpserver", "create", "mcp-server")
    for args in (("access", "get", "mcp-server"), ("access", "list")):
        err = tm("mcpserver", *args).stderr
        assert "no sidecar for default/mcp-server is running" in err
    err = tm("mcpserver", "access", "test", "mcp-server", "--caller", "x", "--tool", "t",
             code=1).stderr  # fmt: skip
    assert "nothing enforces this policy" in err
    assert "no: no sidecar" in tm("mcpserver", "list").stdout


def test_create_with_several_endpoints_and_delete(tm):
    out = tm("mcpserver", "create", "mcp-server", "--endpoint", "/mcp", "--endpoint", "/sse").stdout
    assert out.startswith("MCP server mcp-server registered at /mcp, /sse")
    binding = yaml.safe_load(
        (tm.home / "resources" / "appids" / "default" / "mcp-server.yaml").read_text()
    )
    assert binding["mcpServer"] == {"path": "/mcp", "paths": ["/mcp", "/sse"]}
    tm("mcpserver", "delete", "mcp-server")
    assert tm("mcpserver", "list").stdout.strip() == "no MCP servers registered"
    assert "is not registered" in tm("mcpserver", "delete", "mcp-server", code=1).stderr


def test_appid_list_says_when_an_mcp_policy_is_not_enforced(tm, tmp_path):
    tm("mcpserver", "create", "mcp-server")
    listed = tm("appid", "list").stdout
    assert "yes (not enforced: no sidecar running)" in listed
    tm("mcpserver", "delete", "mcp-server")
    # A policy file put there by hand (or by an older trustmesh) without a registration:
    policies = tm.home / "resources" / "mcpserverpolicies"
    policies.mkdir(parents=True, exist_ok=True)
    (policies / "mcp-server.yaml").write_text(policy_file(tmp_path, "mcp-server").read_text())
    assert "a policy is stored but the app is not registered" in tm("appid", "list").stdout
    assert "not registered as an MCP server" in tm("mcpserver", "access", "get",
                                                   "mcp-server").stderr  # fmt: skip
