"""``--svid-dir``: a file error while polling keeps the current SVID and says why; never fatal.

The poll stat-ed the SVID files on the event loop and let any error but "not found" out, so a
directory made unreadable (a symlink loop stands in for EACCES: root reads past permissions)
ended the sidecar. Now the current SVID keeps serving, ``svid_error`` (``holder.last_error``)
and a log line give the reason, and the fixed directory is picked up at the next change.
"""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import asynccontextmanager

import pytest
import structlog
import trio

from identity import AppIdentity, save_svid_dir
from sidecar import identity_source
from sidecar.identity_source import IdentityHolder, IdentityUnavailable, watch_svid_dir
from tests._support.pki import issue

ME = AppIdentity("public", "default", "server")


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


@asynccontextmanager
async def _watching(directory):
    """A holder fed by ``watch_svid_dir`` polling every 10 ms, its first SVID installed."""
    holder = IdentityHolder(ME)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: watch_svid_dir(
            holder, directory, poll_interval=0.01, task_status=task_status
        ))  # fmt: skip
        yield holder
        nursery.cancel_scope.cancel()


def _make_loop(path) -> None:
    """``path`` becomes a symlink to itself: stat and open fail with ELOOP."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    os.symlink(path.name, path)


@pytest.mark.parametrize("name", ["svid.pem", "svid.key", "bundle.pem", ""])
async def test_a_looping_svid_file_or_directory_keeps_the_svid_and_the_fix_is_taken(
    tmp_path, mesh_ca, name
) -> None:
    # name "": the SVID directory itself loops (the stand-in for one made unreadable).
    directory = tmp_path / "svid"
    save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
    async with _watching(directory) as holder:
        first = holder.material()
        with structlog.testing.capture_logs() as logs:
            _make_loop(directory / name)
            await _until(lambda: holder.last_error is not None)
        assert "Too many levels of symbolic links" in holder.last_error
        assert holder.material() is first  # still serving with the current SVID
        assert any(e["event"].startswith("svid reload refused") for e in logs)
        (directory / name).unlink()  # the loop goes
        fixed = issue(mesh_ca, "server")
        save_svid_dir(directory, fixed, mesh_ca.bundle)  # the fix, written as usual
        await _until(lambda: holder.generation == 2)
        assert holder.last_error is None
        assert holder.material().svid.serial_number == fixed.serial_number


async def test_a_file_replaced_by_a_directory_keeps_the_svid_and_says_so(tmp_path, mesh_ca):
    directory = tmp_path / "svid"
    save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
    async with _watching(directory) as holder:
        first = holder.material()
        (directory / "bundle.pem").unlink()
        (directory / "bundle.pem").mkdir()
        await _until(lambda: holder.last_error is not None)
        assert "bundle.pem" in holder.last_error and holder.material() is first
        (directory / "bundle.pem").rmdir()
        save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
        await _until(lambda: holder.generation == 2 and holder.last_error is None)


async def test_a_directory_it_may_not_search_keeps_the_svid_and_says_so(
    tmp_path, mesh_ca, monkeypatch
) -> None:
    # EACCES, which root never meets: ``Path.exists`` (choosing the layout) raises it, where
    # it ignores ELOOP. Simulated at the two calls that list the directory.
    directory = tmp_path / "svid"
    save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
    async with _watching(directory) as holder:
        first = holder.material()

        def denied(_directory):
            raise PermissionError(errno.EACCES, "Permission denied", str(directory))

        monkeypatch.setattr(identity_source, "svid_dir_layout", denied)
        monkeypatch.setattr(identity_source, "load_svid_dir", denied)
        await _until(lambda: holder.last_error is not None)
        assert holder.last_error == f"cannot read {directory}: Permission denied"
        assert holder.material() is first
        monkeypatch.undo()
        save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
        await _until(lambda: holder.generation == 2 and holder.last_error is None)


async def test_the_twin_a_rotation_is_installed(tmp_path, mesh_ca) -> None:
    directory = tmp_path / "svid"
    save_svid_dir(directory, issue(mesh_ca, "server"), mesh_ca.bundle)
    async with _watching(directory) as holder:
        fresh = issue(mesh_ca, "server")
        save_svid_dir(directory, fresh, mesh_ca.bundle)
        await _until(lambda: holder.generation == 2)
        assert holder.last_error is None
        assert holder.material().svid.serial_number == fresh.serial_number


async def test_an_unreadable_directory_at_the_start_fails_the_start_naming_it(tmp_path):
    directory = tmp_path / "svid"
    os.symlink("svid", directory)
    with pytest.raises(IdentityUnavailable, match=r"cannot use SVID directory .*symbolic links"):
        await watch_svid_dir(IdentityHolder(ME), directory)  # raises before it has started
