"""What the control plane says about a change: which version it replaced, and --wait's answer.

Issue #14: ``configuration create`` / ``apply`` on an existing name say which version they
replaced; ``--wait`` returns as soon as a sidecar refuses the new version (not after the
timeout), naming that sidecar and saying the change is saved on disk; and a sidecar broken for
an unrelated reason does not fail everyone's ``--wait``.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests._support.cli_calls import Cli

TRUSTMESH = [sys.executable, "-m", "sidecar"]

PIPED = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: piped
spec:
  httpPipeline:
    handlers:
      - name: missing-bearer
        type: middleware.http.bearer
"""

OPEN = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: {name}
spec:
  accessControl:
    defaultAction: allow
"""


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    return Cli(capsys, monkeypatch, tmp_path)


def test_create_and_apply_on_an_existing_name_say_which_version_they_replaced(cli, tmp_path):
    home = ["--home", str(tmp_path / "mesh")]
    first = cli("configuration", "create", "acl", "--default-action", "deny", *home)
    assert first.stdout == "applied as version 1\n"
    again = cli("configuration", "create", "acl", "--default-action", "allow", *home)
    assert again.stdout == "configuration/acl replaced version 1\napplied as version 2\n"

    (tmp_path / "two.yaml").write_text(OPEN.format(name="acl") + "---\n" + OPEN.format(name="new"))
    applied = cli("apply", "-f", str(tmp_path / "two.yaml"), *home)
    assert applied.stdout == (
        "configuration/acl replaced version 2\nconfiguration/new applied\napplied as version 3\n"
    )


def test_replacing_a_file_written_by_hand_says_so(cli, tmp_path):
    home = tmp_path / "mesh"
    cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    path = home / "resources" / "configurations" / "acl.yaml"
    path.write_text(path.read_text().split("\n", 1)[1])  # an editor dropped the first line
    again = cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    assert again.stdout.startswith("configuration/acl replaced a copy written outside trustmesh\n")


def tm(mesh, *args: str) -> subprocess.CompletedProcess:
    # The subprocess timeout is far below --timeout: a --wait that sits out its timeout fails.
    return subprocess.run(
        [*TRUSTMESH, *args, "--home", str(mesh.home)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
def test_wait_stops_at_once_at_the_sidecar_that_refuses_the_new_version(mesh, tmp_path):
    app = mesh.procs.app()
    server = mesh.sidecar("server", app_port=app.ready["port"])
    client = mesh.sidecar("client")
    (tmp_path / "piped.yaml").write_text(PIPED)
    assert tm(mesh, "apply", "-f", str(tmp_path / "piped.yaml"), "--wait").returncode == 0

    result = tm(mesh, "appid", "update", "server", "--app-config", "piped",
                "--wait", "--timeout", "600")  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        "trustmesh: version 2 is saved on disk, but sidecar default/server refused it and keeps "
        "enforcing version 1: component 'missing-bearer' named by configuration 'piped' does "
        "not exist\n"
    )
    shown = tm(mesh, "appid", "get", "server").stdout.splitlines()
    assert "configuration  piped" in shown  # saved, as the error says; and not in force:
    assert (
        "policy         version 1; refusing version 2: component 'missing-bearer' named by "
        "configuration 'piped' does not exist"
    ) in shown
    listed = tm(mesh, "appid", "list").stdout.splitlines()
    assert next(line for line in listed if line.startswith("server ")).endswith(
        "version 1; refusing version 2"
    )
    # The sidecar still enforces version 1 (no configuration: every mesh caller allowed).
    answer = httpx.get(f"{client.url()}/v1.0/invoke/server/method/echo", timeout=10)
    assert answer.status_code == 200
    assert server.popen.poll() is None


@pytest.mark.e2e
def test_wait_is_not_failed_by_a_sidecar_already_broken_for_another_reason(mesh):
    app = mesh.procs.app()
    mesh.sidecar("broken", app_port=app.ready["port"], extra=["--config", "nope"])
    mesh.sidecar("healthy")

    result = tm(mesh, "configuration", "create", "other", "--default-action", "allow",
                "--wait", "--timeout", "600")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "applied as version 1; enforced by default/healthy\n"
    assert result.stderr == (
        "warning: not enforced by default/broken, which has refused every version since 0: "
        "configuration 'nope' attached to broken does not exist\n"
    )
