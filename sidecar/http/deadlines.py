"""Deadlines for reads waiting on a socket: one sweeper task per trio run, not a cancel scope
per read.

A trio cancel scope costs several microseconds to enter and to leave (it registers its deadline,
runs two context managers and re-links the task's cancel status), and the data plane waited
under one or two of them per request on each side (#11). A waiting read only needs to stop
once its deadline passes, so it just records its deadline here, and a single sweeper wakes each
read past its deadline with ``trio.lowlevel.notify_closing`` on its socket: the read's
``wait_readable`` raises ``ClosedResourceError``, and the connection turns that into the error
its phase names. The socket itself stays open (the caller may still answer 408 on it); it is
never read again.

Streams without a socket (memory streams in tests, ``trio.SSLStream``) keep a cancel scope
per waiting read (see :meth:`.connection.HttpConnection._receive`).
"""

from __future__ import annotations

import math
from typing import Protocol

import structlog
import trio

from ..ticks import next_tick

log = structlog.get_logger("trustmesh.http")

MAX_SLEEP = 1.0  # the sweeper wakes at least this often while any read waits under a deadline


class Waiter(Protocol):
    wait_deadline: float  # trio time; math.inf while not waiting under a deadline

    def expire(self) -> None:
        """The deadline passed: wake the waiting read (it raises its timeout)."""


class Sweeper:
    """Wakes reads whose deadline passed; one per trio run (:func:`sweeper`).

    It sleeps until the earliest deadline it knows of, but never longer than
    :data:`MAX_SLEEP`; a read that starts waiting with an earlier deadline than the sweeper's
    next wake moves that wake forward (rare: the data plane's deadlines are seconds long). A
    wake costs the process a few hundred microseconds, so it does not tick faster than it must:
    with every connection idle between requests, about once a second.
    """

    def __init__(self) -> None:
        self._waiting: set[Waiter] = set()
        self._wakeup = trio.Event()
        self._earliest = math.inf  # no later than every watched deadline
        self._wake_at = math.inf  # when the sweeper's current sleep ends
        self._sleep: trio.CancelScope | None = None

    def watch(self, waiter: Waiter) -> None:
        self._waiting.add(waiter)
        deadline = waiter.wait_deadline
        if deadline < self._earliest:
            self._earliest = deadline
        if deadline < self._wake_at:
            self._wake_at = deadline
            if self._sleep is not None:
                self._sleep.deadline = deadline
        if not self._wakeup.is_set():
            self._wakeup.set()

    def unwatch(self, waiter: Waiter) -> None:
        self._waiting.discard(waiter)

    @property
    def watched(self) -> int:
        return len(self._waiting)

    async def run(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            # The cap falls on the grid the sidecar's pollers wake on (..ticks): one wake-up.
            self._wake_at = min(self._earliest, next_tick(MAX_SLEEP, trio.current_time()))
            with trio.CancelScope(deadline=self._wake_at) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            self._wake_at = math.inf
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        due = []
        earliest = math.inf
        for waiter in self._waiting:
            deadline = waiter.wait_deadline
            if deadline <= now:
                due.append(waiter)
            elif deadline < earliest:
                earliest = deadline
        self._earliest = earliest
        for waiter in due:
            self._waiting.discard(waiter)
            try:
                waiter.expire()
            except Exception:  # a system task must never raise: that would end the run
                log.exception("expiring a waiting read failed")


_SWEEPER: trio.lowlevel.RunVar[Sweeper] = trio.lowlevel.RunVar("trustmesh_sweeper")


def sweeper() -> Sweeper:
    """This trio run's sweeper, started (as a system task) the first time it is needed."""
    try:
        return _SWEEPER.get()
    except LookupError:
        found = Sweeper()
        _SWEEPER.set(found)
        trio.lowlevel.spawn_system_task(found.run, name="trustmesh deadline sweeper")
        return found


NO_DEADLINE = math.inf
