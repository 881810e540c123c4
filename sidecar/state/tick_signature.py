"""One listing of the store per poll tick, however many watchers poll it.

A sidecar has two watchers on the same store — the policy's and the identity map's — and both
wake on the same 0.25 s grid (:mod:`sidecar.ticks`) to compare the store's signature with the
last one they saw. The signature is a ``stat`` of every resource file, taken on the event loop:
measured with ``time.process_time()``, ~0.15 / 1.5 / 25 ms of CPU for 100 / 1,000 / 10,000
files, so two watchers taking it each paid that twice per tick. :class:`SignaturePerTick` takes
it once per tick and hands the same value to every caller in that tick.

Why it is safe: a value is reused only until the next tick of the grid, so a caller sees the
store as it was at most one poll interval ago — a change is seen at the next tick at the
latest, which is what polling promises anyway. Whoever loads a changed store takes a fresh
signature in its own thread (the policy watcher does), never this cached one.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..ticks import next_tick

STORE_POLL_INTERVAL = 0.25  # seconds between two looks at the store, for every store watcher


class SignaturePerTick:
    """``signature()``, taken at most once per tick of ``interval`` on trio's clock."""

    def __init__(self, signature: Callable[[], tuple], interval: float = STORE_POLL_INTERVAL):
        self._signature = signature
        self._interval = interval
        self._tick: float | None = None  # the end of the tick the cached value belongs to
        self._value: tuple = ()

    def __call__(self) -> tuple:
        # The tick is named by its end: every caller woken at (or just after) one deadline of
        # the grid computes the same next deadline, whatever the float rounding of ``now``.
        tick = next_tick(self._interval, trio.current_time())
        if tick != self._tick:
            self._value = self._signature()
            self._tick = tick
        return self._value
