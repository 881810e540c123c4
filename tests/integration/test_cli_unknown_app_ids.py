"""Unknown App IDs in ``--policy`` and ``appid update`` are accepted but warned about (#14).

An app may start after its policy is written, so an App ID no app has used yet is not an error;
but a typo is a rule that silently never matches, so the warning names the closest App ID the
mesh knows (bound, running, or a registered MCP server).
"""

from __future__ import annotations

import pytest

from tests._support.cli_calls import Cli


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    return Cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def home(cli, tmp_path):
    """A mesh that knows mcp-client (bound) and weather-service (an MCP server)."""
    home = tmp_path / "mesh"
    cli("configuration", "create", "base", "--default-action", "allow", "--home", str(home))
    cli("appid", "update", "mcp-client", "--app-config", "base", "--home", str(home))
    cli("mcpserver", "create", "weather-service", "--home", str(home))
    return home


def test_a_typo_in_policy_is_accepted_and_warned_with_the_closest_known_name(cli, home):
    result = cli("configuration", "create", "acl", "--default-action", "deny",
                 "--policy", "mcp-clent:allow", "--home", str(home))  # fmt: skip
    assert result.code == 0
    assert result.stdout == "applied as version 4\n"
    assert result.stderr == (
        f"warning: App ID 'mcp-clent' is new to the mesh in {home} (in namespace 'default' no "
        "running sidecar, binding or MCP server has it); did you mean 'mcp-client'?\n"
    )
    shown = cli("configuration", "get", "acl", "--home", str(home)).stdout
    assert "appId: mcp-clent" in shown  # accepted as written


def test_an_app_that_starts_later_is_accepted_with_a_plain_warning(cli, home):
    result = cli("configuration", "create", "acl", "--default-action", "deny",
                 "--policy", "billing:allow", "--home", str(home))  # fmt: skip
    assert result.code == 0
    assert result.stderr.endswith("it will match once an app with that ID joins\n")


def test_known_app_ids_draw_no_warning(cli, home):
    result = cli("configuration", "create", "acl", "--default-action", "deny",
                 "--policy", "mcp-client:allow", "--policy", "weather-service:deny",
                 "--home", str(home))  # fmt: skip
    assert result.code == 0 and result.stderr == ""
    again = cli("appid", "update", "mcp-client", "--app-config", "acl", "--home", str(home))
    assert again.code == 0 and again.stderr == ""


def test_appid_update_of_an_unknown_app_id_warns_with_the_closest_name(cli, home):
    result = cli("appid", "update", "weather-servce", "--app-config", "base", "--home", str(home))
    assert result.code == 0
    assert "App ID 'weather-servce' is new to the mesh" in result.stderr
    assert result.stderr.endswith("did you mean 'weather-service'?\n")


def test_the_namespace_of_the_policy_is_the_one_searched(cli, home):
    result = cli("configuration", "create", "acl", "--default-action", "deny",
                 "--policy", "mcp-client:allow", "--namespace", "payments",
                 "--home", str(home))  # fmt: skip
    assert "App ID 'mcp-client' is new to the mesh" in result.stderr
    assert "in namespace 'payments'" in result.stderr


def test_appid_get_of_an_unknown_app_id_names_the_home_and_the_closest_name(cli, home):
    result = cli("appid", "get", "mcp-clien", "--home", str(home))
    assert result.code == 1
    assert result.stderr == (
        f"trustmesh: App ID 'mcp-clien' not found in {home} in namespace 'default' (no binding, "
        "running sidecar or MCP server); did you mean 'mcp-client'?\n"
    )
    known = cli("appid", "get", "mcp-client", "--home", str(home))
    assert known.code == 0
    assert known.stdout.splitlines()[2:] == [
        "configuration  base",
        "mcp server     no",
        "running        no",
        "http           -",
        "inbound        -",
        "svid expiry    -",
        "policy         not enforced: no running sidecar",
    ]
