"""Pollers wake on a shared grid, so an idle sidecar wakes once for all of them."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from sidecar.ticks import next_tick, sleep_to_next_tick


@given(
    interval=st.sampled_from([0.02, 0.1, 0.25, 1.0, 15.0]),
    now=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_the_next_tick_is_a_multiple_strictly_after_now_and_at_most_one_interval_away(
    interval, now
):
    tick = next_tick(interval, now)
    assert now < tick <= now + interval * (1 + 1e-9)
    assert abs(tick / interval - round(tick / interval)) < 1e-6


def test_a_time_on_the_grid_sleeps_a_whole_interval():
    assert next_tick(0.25, 0.75) == 1.0
    assert next_tick(0.1, 0.30000000000000004) > 0.30000000000000004


async def test_pollers_started_apart_wake_at_the_same_moments(autojump_clock):
    wakes: dict[str, list[float]] = {"policy": [], "identity map": [], "svid": []}

    async def poll(name: str, interval: float) -> None:
        while True:
            await sleep_to_next_tick(interval)
            wakes[name].append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll, "policy", 0.25)
        await trio.sleep(0.1)
        nursery.start_soon(poll, "identity map", 0.25)
        await trio.sleep(0.07)
        nursery.start_soon(poll, "svid", 1.0)
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert wakes["policy"] == wakes["identity map"]
    assert len(wakes["policy"]) >= 12
    assert set(wakes["svid"]) <= set(wakes["policy"])
    assert len(wakes["svid"]) >= 2
