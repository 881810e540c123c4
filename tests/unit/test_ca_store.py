"""The state directory and the CA files in it: precedence, permissions, refusals."""

from __future__ import annotations

import pytest

from ca import CAAlreadyExists, CANotInitialised, CAStorageError
from ca.home import HOME_ENV, CALayout, ca_layout, resolve_home
from ca.store import ca_exists, load_bundle, load_ca, save_ca
from identity import certificates_to_pem, private_key_to_pem
from tests._support.pki import make_ca


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_home_precedence_option_then_env_then_cwd(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(HOME_ENV, raising=False)
    assert resolve_home(None) == tmp_path / ".trustmesh"
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "env"))
    assert resolve_home(None) == tmp_path / "env"
    assert resolve_home(str(tmp_path / "opt")) == tmp_path / "opt"
    assert resolve_home("relative") == tmp_path / "relative"  # absolute, so chdir cannot move it


def test_home_is_created_0700_and_a_loose_one_is_tightened(tmp_path) -> None:
    home = resolve_home(tmp_path / "a" / "home", create=True)
    assert _mode(home) == 0o700
    home.chmod(0o755)
    resolve_home(home, create=True)
    assert _mode(home) == 0o700


def test_home_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(CAStorageError, match="cannot create private directory"):
        resolve_home(tmp_path / "file", create=True)


def test_save_then_load_round_trips_with_private_keys(tmp_path, mesh_ca) -> None:
    layout = ca_layout(tmp_path / "home", create=True)
    save_ca(layout, mesh_ca)
    assert _mode(layout.directory) == 0o700
    assert {p.name: _mode(p) for p in layout.key_files} == {"root.key": 0o600, "issuer.key": 0o600}
    loaded = load_ca(layout)
    assert loaded.trust_domain == "public"
    assert loaded.root_cert == mesh_ca.root_cert and loaded.issuer_cert == mesh_ca.issuer_cert
    assert load_bundle(layout) == mesh_ca.bundle


def test_existing_ca_is_not_overwritten_without_force(tmp_path, mesh_ca) -> None:
    layout = ca_layout(tmp_path / "home", create=True)
    save_ca(layout, mesh_ca)
    other = make_ca("public")
    with pytest.raises(CAAlreadyExists, match="use --force to replace it"):
        save_ca(layout, other)
    assert load_ca(layout).root_cert == mesh_ca.root_cert
    layout.tokens.write_text("{}")
    save_ca(layout, other, force=True)
    assert load_ca(layout).root_cert == other.root_cert
    assert not layout.tokens.exists()  # the old CA's join tokens die with it


def test_half_written_ca_counts_as_existing(tmp_path) -> None:
    layout = ca_layout(tmp_path / "home", create=True)
    layout.bundle.write_text("x")
    assert ca_exists(layout)


def test_missing_ca_names_the_command_to_run(tmp_path) -> None:
    with pytest.raises(CANotInitialised, match="run 'trustmesh ca init'"):
        load_ca(CALayout(tmp_path / "nothing"))


def test_key_readable_by_others_is_refused(tmp_path, mesh_ca) -> None:
    layout = ca_layout(tmp_path / "home", create=True)
    save_ca(layout, mesh_ca)
    layout.issuer_key.chmod(0o644)
    with pytest.raises(
        CAStorageError, match=r"issuer.key is readable by other users \(mode 0644\)"
    ):
        load_ca(layout)


def test_mismatched_files_are_refused(tmp_path, mesh_ca) -> None:
    layout = ca_layout(tmp_path / "home", create=True)
    save_ca(layout, mesh_ca)
    other = make_ca("public")
    layout.issuer_cert.write_bytes(certificates_to_pem([other.issuer_cert]))
    with pytest.raises(CAStorageError, match=r"issuer\.key does not match"):
        load_ca(layout)
    save_ca(layout, other, force=True)
    layout.root_cert.write_bytes(certificates_to_pem([mesh_ca.root_cert]))
    layout.root_key.write_bytes(private_key_to_pem(mesh_ca.root_key))
    with pytest.raises(CAStorageError, match=r"issuer\.pem is not signed by"):
        load_ca(layout)
