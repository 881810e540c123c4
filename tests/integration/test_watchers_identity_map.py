"""The identity map's watcher: a broken store costs nothing until it is edited.

It used to read the whole store again (on the event loop) at every 0.25 s tick for as long as
one file stayed broken; now it tries again only when the store's signature changes, as the
policy watcher does. Time runs on trio's autojump clock (the watcher's work is on the loop).
"""

from __future__ import annotations

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


async def test_a_broken_binding_is_read_once_not_at_every_tick(tmp_path, autojump_clock):
    store = _store(tmp_path)
    load = CountedLoads(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_identity_map, load, store.signature)
        good = current_identity_map()
        path = store.path("AppIdentityBinding", "runner")
        path.write_text("kind: AppIdentityBinding\nspec: [unclosed\n")  # by hand, broken
        await trio.sleep(60)  # 240 ticks
        assert load.calls == 2  # the start, and once for the broken edit
        assert current_identity_map() is good
        path.write_text(path.read_text().replace("[unclosed", "{}"))  # edited again: still
        await trio.sleep(60)  # broken (no spiffeID), and read once more
        assert load.calls == 3 and current_identity_map() is good
        with store.change() as change:  # the fix
            change.put("AppIdentityBinding", "runner", BUILDER)
        await trio.sleep(1)
        assert load.calls == 4
        assert current_identity_map() is not good
        assert str(current_identity_map().bindings[0].app_id) == "builder"
        nursery.cancel_scope.cancel()


async def test_the_twin_a_busy_store_is_read_again_at_the_next_tick(tmp_path, autojump_clock):
    store = _store(tmp_path)
    load = CountedLoads(store)
    busy = [True]

    def load_or_busy():
        if load.calls and busy[0]:
            load.calls += 1
            raise StoreBusy("the mesh store is being written")
        return load()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_identity_map, load_or_busy, store.signature)
        with store.change() as change:
            change.put("AppIdentityBinding", "runner", BUILDER)
        await trio.sleep(1.1)  # four ticks (on the 0.25 s grid), each finding the writer at it
        assert load.calls == 5
        busy[0] = False  # the writer is done: the next tick reads its change
        await trio.sleep(0.25)
        assert str(current_identity_map().bindings[0].app_id) == "builder"
        nursery.cancel_scope.cancel()
