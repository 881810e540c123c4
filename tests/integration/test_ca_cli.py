"""``trustmesh ca …`` end to end: CliRunner for breadth, real subprocesses for what users see."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess

import pytest
from click.testing import CliRunner
from cryptography import x509

from ca.cli import ca_group
from ca.home import ca_layout
from ca.tokens import TOKEN_PREFIX, TokenStore, token_hash
from identity import AppIdentity, load_svid_dir
from tests._support.ca_proc import TRUSTMESH
from tests._support.pki import utcnow


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("cli") / "state"
    result = CliRunner().invoke(ca_group, ["init", "--home", str(home)])
    assert result.exit_code == 0, result.output
    return home


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TRUSTMESH, *args], capture_output=True, text=True, check=False, env=env, timeout=30
    )


def test_init_makes_a_private_directory_and_keys(home) -> None:
    layout = ca_layout(home)
    assert _mode(home) == _mode(layout.directory) == 0o700
    assert _mode(layout.root_key) == _mode(layout.issuer_key) == 0o600
    root = x509.load_pem_x509_certificate(layout.root_cert.read_bytes())
    nc = root.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and [n.value for n in nc.value.permitted_subtrees] == ["public"]


def test_init_twice_without_force_fails_with_one_line_and_no_traceback(home) -> None:
    before = ca_layout(home).root_cert.read_bytes()
    result = run("ca", "init", "--home", str(home))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "a CA already exists" in result.stderr and "--force" in result.stderr
    assert ca_layout(home).root_cert.read_bytes() == before


def test_init_force_replaces(tmp_path) -> None:
    runner = CliRunner()
    assert runner.invoke(ca_group, ["init", "--home", str(tmp_path)]).exit_code == 0
    before = ca_layout(tmp_path).root_cert.read_bytes()
    result = runner.invoke(
        ca_group, ["init", "--home", str(tmp_path), "--force", "--trust-domain", "example.org"]
    )
    assert result.exit_code == 0, result.output
    assert ca_layout(tmp_path).root_cert.read_bytes() != before
    assert "example.org" in result.output


def test_home_comes_from_the_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TRUSTMESH_HOME", str(tmp_path / "envhome"))
    assert CliRunner().invoke(ca_group, ["init"]).exit_code == 0
    assert ca_layout(tmp_path / "envhome").root_key.exists()


def test_issue_writes_the_three_files(home, tmp_path) -> None:
    out = tmp_path / "svid"
    result = CliRunner().invoke(
        ca_group,
        ["issue", "--home", str(home), "--app-id", "web", "--ttl", "2h", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bundle.pem", "svid.key", "svid.pem"]
    assert _mode(out / "svid.key") == 0o600
    svid, _ = load_svid_dir(out)
    assert svid.identity == AppIdentity("public", "default", "web")
    assert svid.not_after - svid.not_before == dt.timedelta(hours=2, minutes=15)


def test_token_prints_a_token_whose_hash_is_stored(home) -> None:
    result = run("ca", "token", "--home", str(home), "--app-id", "web", "--namespace", "prod")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith(TOKEN_PREFIX)
    stored = ca_layout(home).tokens.read_text()
    assert token not in stored and token_hash(token) in stored
    identity = TokenStore(ca_layout(home)).check(token, now=utcnow())
    assert identity == AppIdentity("public", "prod", "web")


def test_bundle_prints_pem(home) -> None:
    result = CliRunner().invoke(ca_group, ["bundle", "--home", str(home)])
    assert result.exit_code == 0
    assert result.output == ca_layout(home).bundle.read_text()
    assert result.output.startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ca", "token", "--app-id", "web", "--ttl", "10"], "invalid duration '10'"),
        (["ca", "token", "--app-id", "my.app"], "dots are reserved"),
        (
            ["ca", "issue", "--app-id", "x", "--namespace", "trustmesh-system", "--out", "o"],
            "reserved for trustmesh itself",
        ),
        (["ca", "serve", "--listen", "nowhere"], "expected HOST:PORT"),
    ],
    ids=["bad-duration", "bad-app-id", "reserved-namespace", "bad-listen"],
)
def test_bad_input_is_one_line_on_stderr(home, args, fragment) -> None:
    result = run(*args, "--home", str(home))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and fragment in result.stderr


def test_init_takes_the_ca_lifetime_and_status_shows_it(tmp_path) -> None:
    result = run("ca", "init", "--home", str(tmp_path), "--ttl", "3d")
    assert result.returncode == 0, result.stderr
    root = x509.load_pem_x509_certificate(ca_layout(tmp_path).root_cert.read_bytes())
    ends = root.not_valid_after_utc
    assert ends - root.not_valid_before_utc == dt.timedelta(days=3, minutes=15)  # + clock skew
    assert f"valid until {ends.isoformat()}" in result.stdout
    status = run("ca", "status", "--home", str(tmp_path))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "trust domain  public"
    assert lines[1] == f"root CA       valid until {ends.isoformat()}  (3 days left)"
    assert lines[2].startswith("issuer CA     valid until ")
    assert "expires soon" in lines[3]


def test_status_of_a_ca_with_a_year_left_warns_of_nothing(home) -> None:
    status = run("ca", "status", "--home", str(home))
    assert status.returncode == 0, status.stderr
    assert "days left" in status.stdout and "expire" not in status.stdout


@pytest.mark.parametrize("ttl", ["12h", "3651d", "0d", "soon"])
def test_a_ca_lifetime_out_of_range_is_one_line(tmp_path, ttl) -> None:
    result = run("ca", "init", "--home", str(tmp_path), "--ttl", ttl)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "--ttl" in result.stderr, result.stderr
    assert not ca_layout(tmp_path).root_cert.exists()


def test_commands_without_a_ca_say_to_init(tmp_path) -> None:
    for args in (["bundle"], ["status"], ["token", "--app-id", "w"], ["serve"]):
        result = run("ca", *args, "--home", str(tmp_path / "none"))
        assert result.returncode != 0
        assert result.stderr.strip().endswith("run 'trustmesh ca init'"), result.stderr
        assert result.stderr.count("\n") == 1


def test_port_in_use_is_one_line(home) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("ca", "serve", "--home", str(home), "--listen", f"127.0.0.1:{port}")
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
