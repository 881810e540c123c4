"""``--config FILE``: a file the poll cannot stat is refused, not fatal.

The policy watcher stats the ``--config`` file on the event loop beside the store's signature,
and let every error but "not found" out of the poll, which ended the sidecar (a symlink loop
stands in for a file another user made unreadable: root reads past permissions).
"""

from __future__ import annotations

import os

import trio

from identity import AppIdentity
from sidecar.state.policy_builder import ConfigOverride, deny_all_policy
from sidecar.state.store import AppBinding, MeshStore
from sidecar.state.watcher import PolicyHolder, watch_policy
from tests._support import k8s_quickstart as qs

ME = AppIdentity("public", "default", "server")


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


def _write_config(path, deny: str) -> None:
    qs.write_yaml_documents(path, [qs.configuration("from-file", "allow", deny)])


async def _watch_config_file(tmp_path, break_it, why: str) -> None:
    store = MeshStore(tmp_path / "home")
    with store.change() as change:
        change.put_binding(AppBinding(app_id="server"))
    config = tmp_path / "config.yaml"
    _write_config(config, "client")
    holder = PolicyHolder(deny_all_policy("not loaded yet"))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: watch_policy(
                holder,
                store,
                ME,
                ConfigOverride(source=str(config)),
                poll_interval=0.01,
                task_status=task_status,
            )
        )
        good, loads = holder.current, holder.loads
        assert holder.error is None
        break_it(config)
        await _until(lambda: holder.error is not None)
        assert why in holder.error and str(config) in holder.error
        assert holder.current is good  # the last good policy stays in force
        if config.is_dir() and not config.is_symlink():
            config.rmdir()
        else:
            config.unlink()
        _write_config(config, "nobody")  # the fix
        await _until(lambda: holder.error is None and holder.loads == loads + 1)
        nursery.cancel_scope.cancel()


async def test_a_config_file_that_loops_is_refused_and_the_fix_applied(tmp_path) -> None:
    def loop(config) -> None:
        config.unlink()
        os.symlink(config.name, config)

    await _watch_config_file(tmp_path, loop, "symbolic links")


async def test_the_twin_a_config_file_replaced_by_a_directory_is_refused(tmp_path) -> None:
    def directory(config) -> None:
        config.unlink()
        config.mkdir()

    await _watch_config_file(tmp_path, directory, "is a directory")
