"""A sidecar that cannot start says why in one line, and spends nothing on the way.

Its listeners used to be opened last, after the SVID was fetched with the one-time join token
and the policy loaded: a port in use then printed the progress log lines before the
``trustmesh:`` line, and spent the token, so the same command with a free port was refused
(401 TOKEN_USED). The ports are now taken first. Twin: the same token, the port free, starts.
A peers file that is not YAML printed the parser's four-line report; now its one line.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support.ca_proc import running_ca

pytestmark = pytest.mark.e2e

TRUSTMESH = str(Path(sys.executable).parent / "trustmesh")


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [TRUSTMESH, *args, "--home", str(home)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def _sidecar(home: Path, url: str, token: str, *ports: str) -> list[str]:
    argv = ["sidecar", "--app-id", "web", "--ca-url", url, "--token", token, *ports]
    return [TRUSTMESH, *argv, "--home", str(home)]


@pytest.fixture
def taken_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--http-port", "--admin-port", "--inbound-port"])
def test_a_port_in_use_fails_with_one_line_and_leaves_the_join_token_unspent(
    tmp_path, taken_port, flag
):
    home = tmp_path / "mesh"
    assert _cli(home, "ca", "init").returncode == 0
    token = _cli(home, "ca", "token", "--app-id", "web").stdout.strip()
    ports = {"--http-port": "0", "--admin-port": "0", "--inbound-port": "0"}
    ports[flag] = str(taken_port)
    args = [part for pair in ports.items() for part in pair] + ["--app-port", "9"]
    with running_ca(home, tmp_path / "ca.log") as ca:
        failed = subprocess.run(
            _sidecar(home, ca.url, token, *args), capture_output=True, text=True, timeout=60
        )
        assert failed.returncode == 1
        assert failed.stderr == f"trustmesh: cannot listen on 127.0.0.1:{taken_port}: " + (
            "Address already in use\n"
        )
        # Twin: the same command with free ports starts, with the same token.
        _starts_with(_sidecar(home, ca.url, token, "--http-port", "0", "--app-port", "9"))


def _starts_with(argv: list[str]) -> None:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        line = b""
        while time.monotonic() < deadline and not line.endswith(b"\n"):
            readable, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not readable:
                break
            line = proc.stdout.readline()
            if not line:
                break
        assert b'"event": "ready"' in line, (line, proc.poll())
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        assert b"TOKEN_USED" not in err, err


def test_a_peers_file_that_is_not_yaml_fails_with_one_line(tmp_path):
    peers = tmp_path / "peers.yaml"
    peers.write_text("{web: 127.0.0.1:1\n")  # the flow mapping is never closed
    failed = _cli(tmp_path / "mesh", "sidecar", "--app-id", "web", "--peers", str(peers))
    assert failed.returncode == 1
    assert failed.stderr == (
        f"trustmesh: cannot read peers file {peers}:2: did not find expected ',' or '}}'\n"
    )


@pytest.mark.parametrize("spelling", ["missing.yaml", "conf/missing.yml", "."])
def test_a_config_file_that_is_not_there_fails_the_start_with_one_line(tmp_path, spelling):
    # A mistyped --config path used to start a sidecar that answered 503 to every request (no
    # valid policy yet) while looking healthy. The join token is not spent either.
    home = tmp_path / "mesh"
    assert _cli(home, "ca", "init").returncode == 0
    token = _cli(home, "ca", "token", "--app-id", "web").stdout.strip()
    config = str(tmp_path / spelling)
    with running_ca(home, tmp_path / "ca.log") as ca:
        argv = _sidecar(home, ca.url, token, "--http-port", "0", "--app-port", "9")
        failed = subprocess.run(
            [*argv, "--config", config], capture_output=True, text=True, timeout=60
        )
        assert failed.returncode == 1
        problem = "not a file" if spelling == "." else "no such file"
        assert failed.stderr == (
            f"trustmesh: --config {config}: {problem} (a Configuration in the mesh store is "
            "named with lower-case letters, digits and '-' only)\n"
        )
        # Twin: the file there, the same token: the sidecar starts.
        good = tmp_path / "good.yaml"
        good.write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
            "spec: {accessControl: {defaultAction: deny, trustDomain: public}}\n"
        )
        _starts_with([*argv, "--config", str(good)])


@pytest.mark.parametrize("spelling", ["conf/missing", "./missing", "Missing", "dangling"])
def test_a_config_path_without_a_yaml_suffix_that_is_not_there_fails_the_start(tmp_path, spelling):
    # Neighbours of the missing .yaml: a path (it has a '/'), a name no Configuration can have
    # (upper case), and a symlink whose target is gone (a ConfigMap mount mid-swap) were taken
    # for names in the mesh store and started a sidecar that refused every request.
    home = tmp_path / "mesh"
    assert _cli(home, "ca", "init").returncode == 0
    token = _cli(home, "ca", "token", "--app-id", "web").stdout.strip()
    if spelling == "dangling":
        (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with running_ca(home, tmp_path / "ca.log") as ca:
        argv = _sidecar(home, ca.url, token, "--http-port", "0", "--app-port", "9")
        failed = subprocess.run(
            [*argv, "--config", spelling], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert failed.returncode == 1
        problem = f"a symlink to {tmp_path / 'gone'}, which does not exist"
        if spelling != "dangling":
            problem = "no such file"
        assert failed.stderr == (
            f"trustmesh: --config {spelling}: {problem} (a Configuration in the mesh store is "
            "named with lower-case letters, digits and '-' only)\n"
        )
        # Twin: a Configuration name is still looked up in the store (the sidecar starts, with
        # the same token).
        _starts_with([*argv, "--config", "missing"])
