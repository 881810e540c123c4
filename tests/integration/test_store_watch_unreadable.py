"""A mesh store edited by hand into something unreadable: the sidecar keeps its last good
policy and says why, and takes the fix as soon as it lands.

The policy watcher takes the store's signature on the event loop (sidecar/state/store.py); a
directory it cannot list (another user's 0700 directory, here a symlink loop, which root cannot
read past either) used to raise out of the poll and end the sidecar. And a snapshot used to read
such a directory as empty, so the resources in it vanished from the policy without a word.
A ``--policy-dir`` that is a plain directory (no kubelet ``..data`` link) is polled the same way.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import trio

from identity import AppIdentity
from sidecar.state.policy_builder import deny_all_policy
from sidecar.state.policy_dir import PolicyDirStore
from sidecar.state.store import AppBinding, MeshStore
from sidecar.state.watcher import PolicyHolder, watch_policy
from tests._support import k8s_quickstart as qs
from tests.integration.test_k8s_policy_dir import _app_id

ME = AppIdentity("public", "default", "server")


def _store(tmp_path) -> MeshStore:
    store = MeshStore(tmp_path / "home")
    with store.change() as change:
        change.put(
            "Configuration", "deny-client", qs.configuration("deny-client", "allow", "client")
        )
        change.put_binding(
            AppBinding(app_id="server", namespace="default", configuration="deny-client")
        )
    return store


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


@asynccontextmanager
async def _watching(store: MeshStore | PolicyDirStore):
    """A policy watcher polling ``store`` every 10 ms, its first policy applied."""
    holder = PolicyHolder(deny_all_policy("not loaded yet"))
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: watch_policy(
                holder, store, ME, None, poll_interval=0.01, task_status=task_status
            )
        )
        yield holder
        nursery.cancel_scope.cancel()


async def _watch_through(store: MeshStore | PolicyDirStore, break_it, fix_it, why: str) -> None:
    async with _watching(store) as holder:
        good = holder.current
        assert holder.error is None and good.sources["configuration"] == "'deny-client'"
        loads = holder.loads
        break_it()
        await _until(lambda: holder.error is not None)
        assert why in holder.error
        assert holder.current is good  # the last good policy stays in force
        fix_it()
        await _until(lambda: holder.error is None)
        assert holder.loads == loads + 1 and holder.current.sources == good.sources


async def test_a_kind_directory_that_cannot_be_listed_is_refused_not_fatal(tmp_path) -> None:
    store = _store(tmp_path)
    loop = store.root / "components"  # no component yet: the directory is absent
    fix = loop.unlink
    await _watch_through(store, lambda: os.symlink("components", loop), fix, "cannot be listed")


async def test_a_resource_file_that_cannot_be_stat_ed_is_read_not_fatal(tmp_path) -> None:
    # A loop where a resource file belongs: the snapshot reads it as a broken resource (which
    # only matters to an app that uses it); the poll must not die on it first.
    store = _store(tmp_path)
    async with _watching(store) as holder:
        good, loads = holder.current, holder.loads
        os.symlink("loop.yaml", store.root / "configurations" / "loop.yaml")
        await _until(lambda: holder.loads > loads)  # looked at again, and still serving
        assert holder.error is None and holder.current.sources == good.sources


async def test_the_twin_a_readable_hand_edit_is_applied(tmp_path) -> None:
    store = _store(tmp_path)
    async with _watching(store) as holder:
        loads = holder.loads
        path = store.path("Configuration", "deny-client")
        path.write_text(path.read_text().replace("client", "nobody"))  # in place, by hand
        await _until(lambda: holder.loads > loads)
        assert holder.error is None


async def test_a_plain_policy_dir_with_a_file_it_cannot_stat_is_refused_not_fatal(tmp_path):
    # --policy-dir on a plain directory (no kubelet ..data link): the same poll, on the loop.
    directory = tmp_path / "policies"
    directory.mkdir()
    config = qs.configuration("deny-client", "allow", "client")
    documents = {"configurations.yaml": [config], "appids.yaml": [_app_id("server", "deny-client")]}
    for name, docs in documents.items():
        qs.write_yaml_documents(directory / name, docs)
    (directory / "generation").write_text("1\n")
    loop = directory / "loop.yaml"
    store = PolicyDirStore(directory)
    fix = loop.unlink
    await _watch_through(store, lambda: os.symlink("loop.yaml", loop), fix, "symbolic links")
