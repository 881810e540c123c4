"""One mesh, found the same way from anywhere (issue #14).

The home is ``--home`` (before or after the subcommand), else ``$TRUSTMESH_HOME``, else the
nearest ``.trustmesh/`` in the current directory or its parents, else ``./.trustmesh`` for a
command that creates state. Commands that only read never create anything, and every "nothing
found" names the home it looked in.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests._support.cli_calls import Cli, files_under, one_line_error


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    return Cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def project(tmp_path):
    """A project tree: the mesh is created at its top, commands run from deep inside."""
    top = tmp_path / "project"
    deep = top / "services" / "agent" / "src"
    deep.mkdir(parents=True)
    return top, deep


def test_a_command_deep_in_the_project_finds_the_mesh_created_at_its_top(cli, project):
    top, deep = project
    created = cli("configuration", "create", "acl", "--default-action", "deny", cwd=top)
    assert created.code == 0, created.stderr
    assert (top / ".trustmesh" / "resources" / "configurations" / "acl.yaml").is_file()

    shown = cli("configuration", "get", "acl", cwd=deep)
    assert shown.code == 0, shown.stderr
    assert "name: acl" in shown.stdout
    changed = cli("configuration", "create", "acl", "--default-action", "allow", cwd=deep)
    assert changed.code == 0, changed.stderr
    assert "configuration/acl replaced version 1" in changed.stdout
    assert not (deep / ".trustmesh").exists()  # no second mesh beside the first


def test_the_nearest_mesh_wins_and_a_ceiling_stops_the_search(cli, project):
    top, deep = project
    services = top / "services"
    cli("configuration", "create", "outer", "--default-action", "deny", cwd=top)
    inner_home = str(services / ".trustmesh")  # (from services/ it would find top's mesh)
    cli("configuration", "create", "inner", "--default-action", "deny", "--home", inner_home)
    listed = cli("configuration", "list", cwd=deep)
    assert "inner" in listed.stdout and "outer" not in listed.stdout

    fenced = cli(
        "configuration", "list", cwd=deep, env={"TRUSTMESH_CEILING_DIRECTORIES": str(services)}
    )
    assert fenced.stdout == f"no configurations in {deep / '.trustmesh'} (no mesh there yet)\n"


def test_environment_beats_discovery_and_home_option_beats_environment(cli, project, tmp_path):
    top, deep = project
    cli("configuration", "create", "found", "--default-action", "deny", cwd=top)
    elsewhere = tmp_path / "env-home"
    cli("configuration", "create", "in-env", "--default-action", "deny", "--home", str(elsewhere))
    env = {"TRUSTMESH_HOME": str(elsewhere)}

    listed = cli("configuration", "list", cwd=deep, env=env)
    assert "in-env" in listed.stdout and "found" not in listed.stdout
    explicit = cli("configuration", "list", "--home", str(top / ".trustmesh"), cwd=deep, env=env)
    assert "found" in explicit.stdout and "in-env" not in explicit.stdout


def test_home_given_before_the_subcommand_reaches_every_command(cli, tmp_path):
    home = tmp_path / "mesh"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    before = ["--home", str(home)]
    created = cli(*before, "configuration", "create", "acl", "--default-action", "deny",
                  cwd=elsewhere)  # fmt: skip
    assert created.code == 0, created.stderr
    assert (home / "resources" / "configurations" / "acl.yaml").is_file()
    assert "acl" in cli(*before, "configuration", "list", cwd=elsewhere).stdout
    assert cli(*before, "ca", "init", cwd=elsewhere).code == 0
    assert (home / "ca" / "root.pem").is_file()
    listed = cli(*before, "list", cwd=elsewhere)
    assert listed.stdout.strip() == f"No trustmesh instances found in {home}."
    # The subcommand's own --home still wins over the one before it.
    other = tmp_path / "other"
    mine = cli(*before, "configuration", "list", "--home", str(other), cwd=elsewhere)
    assert mine.stdout.strip() == f"no configurations in {other} (no mesh there yet)"
    assert files_under(elsewhere) == []


def test_home_before_the_subcommand_reaches_the_sidecar_command(tmp_path):
    """A separate process: the sidecar command sets up logging for the whole interpreter."""
    home = tmp_path / "mesh"
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "--home", str(home), "sidecar", "--app-id", "a"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr == (  # one line, no log of a sidecar that never started
        "trustmesh: no identity source: pass --svid-dir DIR, --ca-url URL --token T, "
        "or --identity spire\n"
    )
    assert home.is_dir()  # a sidecar lives in its home: it is a command that creates one
    assert not (tmp_path / ".trustmesh").exists()


READ_ONLY = [
    (("configuration", "list"), "no configurations in {home} (no mesh there yet)"),
    (("appid", "list"), "no App IDs in {home} (no mesh there yet)"),
    (("mcpserver", "access", "list"), "no MCP servers registered in {home} (no mesh there yet)"),
    (("list",), "No trustmesh instances found in {home}."),
]


@pytest.mark.parametrize(("argv", "message"), READ_ONLY, ids=[" ".join(a) for a, _ in READ_ONLY])
def test_reading_commands_create_nothing_and_name_the_home_they_looked_in(
    cli, tmp_path, argv, message
):
    result = cli(*argv, cwd=tmp_path)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == message.format(home=tmp_path / ".trustmesh")
    assert files_under(tmp_path) == []


MISSING = [
    ("configuration", "get", "acl"),
    ("configuration", "delete", "acl"),
    ("mcpserver", "access", "get", "server"),
    ("appid", "update", "app", "--app-config", "acl"),
]


@pytest.mark.parametrize("argv", MISSING, ids=" ".join)
def test_not_found_errors_name_the_home_and_write_nothing(cli, tmp_path, argv):
    error = one_line_error(cli(*argv, cwd=tmp_path))
    assert f"in {tmp_path / '.trustmesh'} (no mesh there yet)" in error
    assert files_under(tmp_path) == []


def test_a_reading_command_in_an_existing_mesh_leaves_it_as_it_was(cli, tmp_path):
    cli("configuration", "create", "acl", "--default-action", "deny", cwd=tmp_path)
    before = files_under(tmp_path)
    for argv in (("configuration", "list"), ("appid", "list"), ("configuration", "get", "acl")):
        assert cli(*argv, cwd=tmp_path).code == 0
    assert files_under(tmp_path) == before
