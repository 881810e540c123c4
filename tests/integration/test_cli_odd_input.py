"""Odd input gets a specific one-line error, never ``internal error: SomeException`` (#14).

Two halves: the situations the review hit (a binary file to ``apply -f``, an unwritable home, a
hand-broken store file), and the class behind them — every error of every package's hierarchy,
and every OSError, is shown as its own message by ``trustmesh``'s one error exit.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import ca
import identity
import sidecar
from ca import CAError
from identity import IdentityError
from sidecar.cli import known_error_message
from sidecar.errors import SidecarError
from tests._support.cli_calls import Cli, files_under, one_line_error


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    return Cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def home(tmp_path):
    return tmp_path / "mesh"


def test_a_binary_file_to_apply_is_named_as_binary(cli, tmp_path, home):
    png = tmp_path / "logo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10")
    error = one_line_error(cli("apply", "-f", str(png), "--home", str(home)))
    assert error == f"trustmesh: {png}: is a binary file, not YAML text"
    assert not home.exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"kind: Configuration  # caf\xe9\n", "is not UTF-8 text (byte 26 cannot be decoded)"),
        (
            b"kind: \x07Configuration\n",
            "not valid YAML: character #x0007 at position 6 is not allowed in YAML",
        ),
        (b"kind: [Configuration\n", "expected ',' or ']'"),
        (b"a: &x 1\nb: *x\n", "1: anchor &x refused"),
    ],
)
def test_text_that_is_not_usable_yaml_is_refused_with_the_reason(
    cli, tmp_path, home, content, reason
):
    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    error = one_line_error(cli("apply", "-f", str(path), "--home", str(home)))
    assert error.startswith(f"trustmesh: {path}:") and reason in error


def test_an_empty_file_to_apply_says_there_is_nothing_to_apply(cli, tmp_path, home):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    error = one_line_error(cli("apply", "-f", str(tmp_path / "empty.yaml"), "--home", str(home)))
    assert error == "trustmesh: no documents to apply"


def test_a_home_that_cannot_be_created_is_named_with_the_reason(cli, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the home's parent should be")
    home = blocker / "mesh"
    written = cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    assert one_line_error(written) == (
        f"trustmesh: cannot write the mesh home: cannot create private directory {home}: "
        "Not a directory"
    )
    started = cli("ca", "init", "--home", str(home))
    assert str(home) in one_line_error(started)
    assert "Not a directory" in started.stderr


def test_a_hand_broken_binding_file_is_named_not_a_key_error(cli, home):
    cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    broken = home / "resources" / "appids" / "default" / "agent.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("{}\n")
    error = one_line_error(cli("appid", "list", "--home", str(home)))
    assert error == f"trustmesh: {broken}: appId must be a non-empty string"


def test_a_corrupt_store_file_is_named_with_its_line(cli, home):
    cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    path = home / "resources" / "configurations" / "acl.yaml"
    path.write_text("spec: [\n")
    error = one_line_error(cli("configuration", "list", "--home", str(home)))
    assert error.startswith(f"trustmesh: {path}:2: ")


def _all_subclasses(base: type) -> list[type]:
    found, todo = [], [base]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def _import_everything() -> None:
    for package in (ca, identity, sidecar):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)


_import_everything()
ERROR_CLASSES = sorted(
    {cls for base in (SidecarError, CAError, IdentityError) for cls in _all_subclasses(base)},
    key=lambda cls: f"{cls.__module__}.{cls.__qualname__}",
)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__qualname__)
def test_every_package_error_is_shown_as_its_own_message(cls):
    exc = cls.__new__(cls)
    Exception.__init__(exc, "the specific reason")
    assert known_error_message(exc) == "the specific reason"
    assert known_error_message(ExceptionGroup("trio", [exc])) == "the specific reason"


def test_os_errors_are_shown_with_the_file_and_the_reason():
    error = PermissionError(13, "Permission denied", "/srv/mesh/resources")
    assert known_error_message(error) == "/srv/mesh/resources: Permission denied"
    assert known_error_message(ValueError("a bug")) is None  # bugs still say they are bugs


def test_nothing_is_left_behind_by_refused_input(cli, tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"\0")
    one_line_error(cli("apply", "-f", "bad.yaml", cwd=tmp_path))
    assert files_under(tmp_path) == ["bad.yaml"]


def test_a_home_the_user_may_not_write_is_named_with_the_reason(cli, home, monkeypatch):
    """As root every directory is writable, so the refusal is the OS's answer, simulated."""
    import sidecar.state.store as store_module

    real_open = store_module.os.open

    def refuse(path, *args, **kwargs):
        if str(path).startswith(str(home)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "open", refuse)
    written = cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    assert one_line_error(written) == (
        f"trustmesh: cannot write the mesh home {home}: Permission denied"
    )


def test_a_file_the_store_may_not_write_is_named_with_the_reason(cli, home, monkeypatch):
    import sidecar.state.store as store_module

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(store_module, "atomic_write", refuse)
    written = cli("configuration", "create", "acl", "--default-action", "deny", "--home", str(home))
    target = home / "resources" / "configurations" / "acl.yaml"
    assert one_line_error(written) == (
        f"trustmesh: cannot write {target} in the mesh home: Permission denied"
    )
