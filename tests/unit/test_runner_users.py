"""Who an app runs as (#15.2): the run file's ``user:``, the root default, the non-root refusal."""

from __future__ import annotations

import io
import os
import textwrap
from pathlib import Path

import pytest

from sidecar.runner import RunFileError, load_run_file
from sidecar.runner.errors import RunnerError
from sidecar.runner.output import Console
from sidecar.runner.runner import Runner, RunOptions
from sidecar.runner.tokens import ApiTokens, scrub_tokens
from sidecar.runner.users import (
    DYNAMIC_IDS,
    AppUser,
    app_user,
    blocked_at,
    dynamic_users,
    unreachable,
)
from tests._support.runner_dirs import app_reachable_dir

NOBODY = AppUser("nobody", 65534, 65534, "/nonexistent")


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def as_user(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 4242)


def run_file(root: Path, text: str) -> Path:
    (root / "a").mkdir()
    (root / "b").mkdir()
    path = root / "dapr.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def test_user_is_read_from_common_and_an_app_overrides_it(tmp_path):
    path = run_file(
        tmp_path,
        """
        version: 1
        common:
          user: svc
        apps:
          - appDirPath: a
          - appDirPath: b
            user: "1234"
        """,
    )
    apps = load_run_file(path).apps
    assert [a.user for a in apps] == ["svc", "1234"]


@pytest.mark.parametrize("bad", ["a:b", "../x", "''", "' nobody'"])
def test_a_user_that_is_not_a_name_or_uid_is_refused_with_its_line(tmp_path, bad):
    path = run_file(tmp_path, f"version: 1\napps:\n  - appDirPath: a\n    user: {bad}\n")
    with pytest.raises(RunFileError, match=r"dapr.yaml:4: user .* must be a user name"):
        load_run_file(path)


def test_as_root_each_app_defaults_to_a_dynamic_user_of_its_own_in_one_run_group(as_root):
    users = dynamic_users(Path("/srv/mesh"), ["a", "b", "c"])
    uids = {u.uid for u in users.values()}
    assert len(uids) == 3 and all(uid in DYNAMIC_IDS for uid in uids)
    assert len({u.gid for u in users.values()}) == 1  # files shared within the run (umask 007)
    assert all(u.umask == 0o007 and u.dynamic for u in users.values())
    assert dynamic_users(Path("/srv/mesh"), ["a"])["a"].uid == users["a"].uid  # stable
    assert app_user(None, "a", users["a"]) is users["a"]
    assert users["a"].env() == {
        "HOME": "/nonexistent",
        "USER": "trustmesh-a",
        "LOGNAME": "trustmesh-a",
    }


def test_a_dynamic_user_is_never_one_the_system_knows(as_root, monkeypatch):
    first = dynamic_users(Path("/srv/mesh"), ["a"])["a"].uid
    monkeypatch.setattr("sidecar.runner.users._uid_known", lambda uid: uid == first)
    assert dynamic_users(Path("/srv/mesh"), ["a"])["a"].uid not in (first, 0)


def test_as_root_a_missing_user_is_refused_naming_it(as_root):
    with pytest.raises(RunnerError, match=r"no-such-user-xyz.*does not exist"):
        app_user("no-such-user-xyz", "app")


def test_as_root_a_bare_uid_needs_no_passwd_entry(as_root):
    user = app_user("61999", "app")
    assert (user.uid, user.gid) == (61999, 61999)


def test_without_root_apps_run_as_the_runner_and_another_user_is_refused(as_user):
    assert app_user(None, "app") is None
    with pytest.raises(RunnerError, match="needs 'trustmesh run' to run as root"):
        app_user("nobody", "app")


@pytest.fixture
def open_dir():
    """A 0755 directory whose parents are open to all (pytest's own are 0700)."""
    with app_reachable_dir() as path:
        yield path


def test_a_private_directory_blocks_the_app_user_at_that_directory(open_dir):
    private = open_dir / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    assert blocked_at(NOBODY, private / "inner") == private
    reason = unreachable(NOBODY, private / "inner", ["python"], {"PATH": "/usr/bin"})
    assert reason is not None and str(private) in reason


def test_a_program_the_app_user_cannot_run_is_named(open_dir):
    program = open_dir / "tool"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o700)
    reason = unreachable(NOBODY, open_dir, ["./tool"], {})
    assert reason == f"cannot run {program} (no access to {program})"
    program.chmod(0o755)
    assert unreachable(NOBODY, open_dir, ["./tool"], {}) is None


def test_tokens_are_fresh_per_app_and_never_inherited():
    one, two = ApiTokens.generate(), ApiTokens.generate()
    assert one.dapr != two.dapr and one.dapr != one.app and len(one.dapr) >= 40
    assert scrub_tokens({"DAPR_API_TOKEN": "x", "APP_API_TOKEN": "y", "PATH": "/bin"}) == {
        "PATH": "/bin"
    }


def test_without_root_the_runner_says_once_that_apps_share_the_mesh_user(as_user, tmp_path):
    path = run_file(
        tmp_path,
        """
        version: 1
        apps:
          - appDirPath: a
            command: ["true"]
          - appDirPath: b
            command: ["true"]
        """,
    )
    out, err = io.StringIO(), io.StringIO()
    runner = Runner(load_run_file(path), RunOptions(tmp_path / "home"), Console(out, err))
    runner._choose_users()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: apps run as uid 4242, the mesh's own user")
    assert "can read the CA key" in lines[0] and "development tool" in lines[0]
    assert all(unit.user is None for unit in runner.units)


def test_as_root_an_app_the_default_user_cannot_start_is_refused_before_anything_starts(
    as_root, tmp_path
):
    with app_reachable_dir() as root:
        path = run_file(root, 'version: 1\napps:\n  - appDirPath: a\n    command: ["./tool"]\n')
        (root / "a" / "tool").write_text("#!/bin/sh\n")
        (root / "a" / "tool").chmod(0o700)
        runner = Runner(load_run_file(path), RunOptions(tmp_path / "home"), Console(*_streams()))
        with pytest.raises(
            RunnerError, match=r"runs as a dynamic user of its own \(uid \d+\), which"
        ):
            runner._choose_users()


def _streams():
    return io.StringIO(), io.StringIO()
