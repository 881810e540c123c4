"""A sidecar lists its store once per poll tick, not once per watcher.

The policy watcher and the identity map's watcher both compare the store's signature (a stat
of every resource file, taken on the event loop) at each 0.25 s tick of the shared grid; each
used to take its own, so a big store cost twice what one look at it costs. Here a real sidecar
runs in this process and every listing of its store is counted against the ticks of the grid
that went by. Twin: sharing the listing loses no change: a new version and a new binding are
both put in force.
"""

from __future__ import annotations

import math

import httpx
import trio

from identity import current_identity_map, install_identity_map
from sidecar.runtime import run_sidecar
from sidecar.state.store import AppBinding, MeshStore
from sidecar.state.tick_signature import STORE_POLL_INTERVAL
from tests._support.in_process import sidecar_options

BINDING = {
    "apiVersion": "trustmesh.dev/v1alpha1",
    "kind": "AppIdentityBinding",
    "metadata": {"name": "runner"},
    "spec": {"spiffeID": "spiffe://public/ns/default/sa/runner", "appID": "builder"},
}


def _tick() -> int:
    return math.floor(trio.current_time() / STORE_POLL_INTERVAL)


def _policy_generation(sidecar) -> int | None:
    host, port = sidecar.admin_address
    status = httpx.get(f"http://{host}:{port}/v1/status", timeout=5).json()
    return status["policy"]["generation"]


async def test_both_watchers_share_one_listing_per_tick_and_miss_no_change(mesh, monkeypatch):
    store = MeshStore(mesh.home)
    with store.change() as change:
        change.put_binding(AppBinding(app_id="server"))
    listings = []
    signature = MeshStore.signature

    def counted(self):
        listings.append(self)  # also from the watcher's thread: no trio clock there
        return signature(self)

    monkeypatch.setattr(MeshStore, "signature", counted)
    previous_map = current_identity_map()
    try:
        async with trio.open_nursery() as nursery:
            sidecar = await nursery.start(run_sidecar, sidecar_options(mesh, "server", None))
            first, counted_before = _tick(), len(listings)
            while _tick() < first + 6:  # six ticks of the grid go by
                await trio.sleep(STORE_POLL_INTERVAL)
            ticks = _tick() - first
            assert len(listings) - counted_before <= ticks + 1  # one listing per tick

            with store.change() as change:  # the twin: a change is still seen by both
                change.put("AppIdentityBinding", "runner", BINDING)
            with trio.fail_after(10):
                while await trio.to_thread.run_sync(_policy_generation, sidecar) != 2:
                    await trio.sleep(0.05)  # (the admin port is served by this same loop)
                while not any(b.app_id == "builder" for b in current_identity_map().bindings):
                    await trio.sleep(0.05)
            sidecar.drain()
            nursery.cancel_scope.cancel()
    finally:
        install_identity_map(previous_map)
