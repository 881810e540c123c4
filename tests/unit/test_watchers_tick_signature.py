"""One store listing per poll tick: every caller in a tick gets the same value, and no value
outlives its tick (a change is seen at the next tick at the latest)."""

from __future__ import annotations

import trio

from sidecar.state.tick_signature import SignaturePerTick
from sidecar.ticks import sleep_to_next_tick


class Listing:
    def __init__(self) -> None:
        self.calls = 0
        self.store = "before"

    def __call__(self) -> tuple:
        self.calls += 1
        return (self.store,)


async def test_callers_woken_at_one_tick_share_one_listing(autojump_clock):
    listing = Listing()
    signature = SignaturePerTick(listing, 0.25)
    seen: list[tuple] = []

    async def watcher() -> None:
        for _ in range(10):
            await sleep_to_next_tick(0.25)
            seen.append(signature())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watcher)
        await trio.sleep(0.1)  # the second watcher starts off the grid, and joins it
        nursery.start_soon(watcher)
    assert len(seen) == 20 and listing.calls == 10


async def test_the_twin_a_change_is_seen_at_the_next_tick(autojump_clock):
    listing = Listing()
    signature = SignaturePerTick(listing, 0.25)
    await sleep_to_next_tick(0.25)
    assert signature() == ("before",)
    listing.store = "after"
    assert signature() == ("before",)  # the same tick: the value taken at its start
    await sleep_to_next_tick(0.25)
    assert signature() == ("after",) and listing.calls == 2


async def test_a_caller_off_the_grid_gets_a_value_at_most_one_interval_old(autojump_clock):
    listing = Listing()
    signature = SignaturePerTick(listing, 0.25)
    await trio.sleep(0.2)
    signature()
    listing.store = "after"
    await trio.sleep(0.1)  # past the grid's next deadline (0.25)
    assert signature() == ("after",)
