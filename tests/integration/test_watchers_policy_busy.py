"""A store that reads as "busy" is a writer mid-change, and only for a while.

A plain ``--policy-dir`` holding a dangling ``*.yaml`` symlink used to read as busy on every
load, so the policy watcher retried every 20 ms forever and applied nothing (and a sidecar
starting on it never started). A dangling file is a broken set, refused by name; and a store
that stays busy for real (a writer holding the lock) is reported after a while, the last good
policy kept, and retried at the poll interval rather than in a loop.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

import pytest
import trio

from identity import AppIdentity
from sidecar.state.policy_builder import deny_all_policy
from sidecar.state.policy_dir import PolicyDirError, PolicyDirStore
from sidecar.state.store import AppBinding, MeshStore, StoreBusy
from sidecar.state.watcher import PolicyHolder, watch_policy
from tests._support import k8s_quickstart as qs
from tests._support.k8s_configmap import publish
from tests.integration.test_k8s_policy_dir import _app_id, _set

ME = AppIdentity("public", "default", "server")


def _plain_dir(tmp_path):
    directory = tmp_path / "policies"
    directory.mkdir()
    config = qs.configuration("deny-client", "allow", "client")
    qs.write_yaml_documents(directory / "configurations.yaml", [config])
    qs.write_yaml_documents(directory / "appids.yaml", [_app_id("server", "deny-client")])
    (directory / "generation").write_text("1\n")
    return directory


class CountingPolicyDir(PolicyDirStore):
    """Counts the loads and the polls a watcher makes, so a test can wait for polls."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.loads = self.polls = 0

    def signature(self) -> tuple:
        self.polls += 1
        return super().signature()

    def snapshot(self, app_id, namespace, *, blocking=True):
        self.loads += 1
        return super().snapshot(app_id, namespace, blocking=blocking)


class CountingMeshStore(MeshStore):
    def __init__(self, home) -> None:
        super().__init__(home)
        self.busy = 0

    def snapshot(self, app_id, namespace, *, blocking=True):
        try:
            return super().snapshot(app_id, namespace, blocking=blocking)
        except StoreBusy:
            self.busy += 1
            raise


class RecordingHolder(PolicyHolder):
    def __init__(self) -> None:
        super().__init__(deny_all_policy("not loaded yet"))
        self.refusals: list[str] = []

    def refused(self, reason: str, generation: int | None) -> None:
        self.refusals.append(reason)
        super().refused(reason, generation)


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


@asynccontextmanager
async def _watching(store, **options):
    """A policy watcher polling ``store`` every 10 ms, started (its first load done)."""
    holder = RecordingHolder()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: watch_policy(
                holder, store, ME, None, poll_interval=0.01, task_status=task_status, **options
            )
        )
        yield holder
        nursery.cancel_scope.cancel()


# -- the snapshot: a dangling file is a refusal naming it, not "busy" -------------------------


@pytest.mark.parametrize("name", ["gone.yaml", "gone.yml", "generation"])
def test_a_dangling_symlink_in_a_plain_policy_dir_is_refused_by_name(tmp_path, name) -> None:
    directory = _plain_dir(tmp_path)
    (directory / name).unlink(missing_ok=True)
    os.symlink("nowhere/" + name, directory / name)
    with pytest.raises(PolicyDirError, match=f"{name} is a symlink to nowhere/{name}, which"):
        PolicyDirStore(directory).snapshot("server", "default")


def test_the_twin_a_symlink_to_a_file_in_a_plain_policy_dir_is_read(tmp_path) -> None:
    directory = _plain_dir(tmp_path)
    (directory / "configurations.yaml").rename(tmp_path / "real.yaml")
    os.symlink(tmp_path / "real.yaml", directory / "configurations.yaml")
    snapshot = PolicyDirStore(directory).snapshot("server", "default")
    assert ("Configuration", "deny-client") in snapshot.resources


def test_a_dangling_symlink_inside_a_kubelet_set_is_refused_by_name(tmp_path) -> None:
    # A hostPath laid out like a ConfigMap can hold one; the set did not move, so no writer
    # explains it.
    stamp = publish(tmp_path / "cm", _set(qs.configuration("calm", "allow"), 3))
    os.symlink("nowhere.yaml", tmp_path / "cm" / stamp / "gone.yaml")
    with pytest.raises(PolicyDirError, match=r"gone\.yaml is a symlink to nowhere\.yaml"):
        PolicyDirStore(tmp_path / "cm").snapshot("server", "default")


def test_a_data_link_naming_no_directory_is_refused(tmp_path) -> None:
    stamp = publish(tmp_path / "cm", _set(qs.configuration("calm", "allow"), 3))
    os.rename(tmp_path / "cm" / stamp, tmp_path / "elsewhere")
    with pytest.raises(PolicyDirError, match=rf"\.\.data points at {stamp}, which is not a dir"):
        PolicyDirStore(tmp_path / "cm").snapshot("server", "default")


# -- the watcher ---------------------------------------------------------------------------


async def test_a_dangling_yaml_symlink_is_refused_once_and_the_fix_applied(tmp_path) -> None:
    store = CountingPolicyDir(_plain_dir(tmp_path))
    async with _watching(store) as holder:
        good, applied = holder.current, holder.loads
        os.symlink("missing.yaml", store.directory / "dangling.yaml")
        await _until(lambda: holder.error is not None)
        assert "dangling.yaml is a symlink to missing.yaml, which does not exist" in holder.error
        assert holder.current is good  # the last good policy stays in force
        loads, polls = store.loads, store.polls
        await _until(lambda: store.polls >= polls + 20)  # twenty polls: no load, no retry
        assert store.loads == loads
        (store.directory / "dangling.yaml").unlink()  # the fix
        await _until(lambda: holder.error is None)
        assert holder.loads == applied + 1 and holder.current.sources == good.sources


async def test_a_store_that_stays_busy_is_reported_and_the_last_good_policy_kept(tmp_path):
    store = CountingMeshStore(tmp_path / "home")
    with store.change() as change:
        change.put("Configuration", "deny-client", qs.configuration("deny-client", "allow"))
        change.put_binding(AppBinding(app_id="server", configuration="deny-client"))
    async with _watching(store, busy_patience=0.2) as holder:
        good = holder.current
        with store.change() as change:  # a writer that holds the lock (a hung apply)
            change.put("Configuration", "deny-client", qs.configuration("deny-client", "deny"))
            await _until(lambda: holder.error is not None)
            assert "the mesh store is being written (busy for over 0.2s" in holder.error
            assert holder.current is good and holder.error_generation is None
            busy = store.busy
            await _until(lambda: store.busy >= busy + 3)  # still trying, once per poll
        await _until(lambda: holder.error is None)  # the writer finished: its change applies
        assert holder.generation == 2 and holder.current is not good


async def test_the_twin_a_writer_mid_change_is_waited_for_without_a_report(tmp_path):
    store = CountingMeshStore(tmp_path / "home")
    with store.change() as change:
        change.put("Configuration", "deny-client", qs.configuration("deny-client", "allow"))
        change.put_binding(AppBinding(app_id="server", configuration="deny-client"))
    async with _watching(store) as holder:
        with store.change() as change:
            change.put("Configuration", "deny-client", qs.configuration("deny-client", "deny"))
            await _until(lambda: store.busy >= 2)  # the watcher met the writer, twice
        await _until(lambda: holder.generation == 2)
        assert holder.refusals == [] and holder.error is None


async def test_a_sidecar_starting_on_a_store_that_stays_busy_starts_denying_and_says_why(
    tmp_path,
):
    store = MeshStore(tmp_path / "home")
    with store.change() as change:
        change.put_binding(AppBinding(app_id="server"))
        with trio.fail_after(5):
            async with _watching(store, busy_patience=0.1) as holder:
                assert holder.generation is None and holder.current.version == "invalid"
                assert "being written (busy for over 0.1s" in holder.error
