"""The identity map's watcher: a broken store costs nothing until it is edited, and reading
the store never stalls the event loop.

It used to read the whole store again (on the event loop) at every 0.25 s tick for as long as
one file stayed broken; now it tries again only when the store's signature changes, as the
policy watcher does. And its load, which waits for a writer holding the store's lock, runs in
a worker thread: on the event loop, that wait froze the whole sidecar.
"""

from __future__ import annotations

import threading
from functools import partial

import pytest
import trio

from identity import current_identity_map, install_identity_map
from sidecar.identity_source import identity_map_from_resources, watch_identity_map
from sidecar.state.store import MeshStore, StoreBusy

BINDING = {
    "apiVersion": "trustmesh.dev/v1alpha1",
    "kind": "AppIdentityBinding",
    "metadata": {"name": "runner"},
    "spec": {"spiffeID": "spiffe://public/ns/default/sa/runner", "appID": "client"},
}
BUILDER = {**BINDING, "spec": {**BINDING["spec"], "appID": "builder"}}


@pytest.fixture(autouse=True)
def _restore_identity_map():
    previous = current_identity_map()
    yield
    install_identity_map(previous)


class CountedLoads:
    """The runtime's load (a snapshot's bindings), counting each call."""

    def __init__(self, store: MeshStore) -> None:
        self.store, self.calls = store, 0

    def __call__(self):
        self.calls += 1
        return identity_map_from_resources(self.store.snapshot("server", "default").resources)


def _store(tmp_path) -> MeshStore:
    store = MeshStore(tmp_path / "home")
    with store.change() as change:
        change.put("AppIdentityBinding", "runner", BINDING)
    return store


class CountedPolls:
    """The store's signature, counting each poll, so a test can wait for polls to go by."""

    def __init__(self, store: MeshStore) -> None:
        self.store, self.calls = store, 0

    def __call__(self) -> tuple:
        self.calls += 1
        return self.store.signature()


async def _until(predicate) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


async def test_a_broken_binding_is_read_once_not_at_every_tick(tmp_path):
    store = _store(tmp_path)
    load, polls = CountedLoads(store), CountedPolls(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_identity_map, load, polls, poll_interval=0.01))
        good = current_identity_map()
        path = store.path("AppIdentityBinding", "runner")
        path.write_text("kind: AppIdentityBinding\nspec: [unclosed\n")  # by hand, broken
        await _until(lambda: load.calls == 2)  # the start, and once for the broken edit
        seen = polls.calls
        await _until(lambda: polls.calls >= seen + 30)  # thirty polls: no load
        assert load.calls == 2 and current_identity_map() is good
        path.write_text(path.read_text().replace("[unclosed", "{}"))  # edited: still broken
        await _until(lambda: load.calls == 3)  # (no spiffeID), and read once more
        seen = polls.calls
        await _until(lambda: polls.calls >= seen + 30)
        assert load.calls == 3 and current_identity_map() is good
        with store.change() as change:  # the fix
            change.put("AppIdentityBinding", "runner", BUILDER)
        await _until(lambda: current_identity_map() is not good)
        assert load.calls == 4 and current_identity_map().bindings[0].app_id == "builder"
        nursery.cancel_scope.cancel()


async def test_the_twin_a_busy_store_is_read_again_at_the_next_tick(tmp_path):
    store = _store(tmp_path)
    load, polls = CountedLoads(store), CountedPolls(store)
    busy = [True]

    def load_or_busy():
        if load.calls and busy[0]:
            load.calls += 1
            raise StoreBusy("the mesh store is being written")
        return load()

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_identity_map, load_or_busy, polls, poll_interval=0.01))
        with store.change() as change:
            change.put("AppIdentityBinding", "runner", BUILDER)
        await _until(lambda: load.calls >= 4)  # three polls in a row, each finding a writer
        busy[0] = False  # the writer is done: the next poll reads its change
        await _until(lambda: current_identity_map().bindings[0].app_id == "builder")
        nursery.cancel_scope.cancel()


async def test_a_writer_holding_the_store_does_not_stall_the_event_loop(tmp_path):
    # The load takes the store's shared lock, waiting for a writer (``trustmesh apply``, or one
    # suspended with ^Z) to finish. Waited for on the event loop, that froze the whole sidecar:
    # no request served, no admin answer. The writer here holds the lock until this test, on
    # the event loop, lets it go (or 5 s pass, which is the failure).
    store = _store(tmp_path)
    load = CountedLoads(store)
    holding, release = threading.Event(), threading.Event()
    released_by_the_loop: list[bool] = []

    def writer() -> None:
        with store.change() as change:
            change.put("AppIdentityBinding", "runner", BUILDER)
            holding.set()
            released_by_the_loop.append(release.wait(timeout=5))

    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_identity_map, load, store.signature, poll_interval=0.01))
        thread = threading.Thread(target=writer)
        thread.start()
        await trio.to_thread.run_sync(holding.wait)
        while load.calls < 2:  # the watcher saw the change and is waiting for the writer
            await trio.sleep(0.01)
        release.set()
        await trio.to_thread.run_sync(thread.join)
        with trio.fail_after(5):
            while current_identity_map().bindings[0].app_id != "builder":
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert released_by_the_loop == [True]
