"""Deadlines for reads waiting on a socket: one sweeper task per trio run, not a cancel scope
per read.

A trio cancel scope costs several microseconds to enter and to leave (it registers its deadline,
runs two context managers and re-links the task's cancel status), and the data plane waited
under one or two of them per request on each side (#11). A read waiting on a socket only needs
to stop when its deadline passes — the exact moment hardly matters, the deadlines are seconds
long — so a waiting read just records its deadline here, and a single sweeper, woken every
:data:`TICK`, wakes each read past its deadline with ``trio.lowlevel.notify_closing`` on its
socket: the read's ``wait_readable`` raises ``ClosedResourceError``, and the connection turns
that into the error its phase names. A deadline thus fires up to one tick late. The socket
itself stays open (the caller may still answer 408 on it); it is never read again.

Streams without a socket (memory streams in tests, ``trio.SSLStream``) keep a cancel scope
per waiting read (see :meth:`.connection.HttpConnection._receive`).
"""

from __future__ import annotations

import math
from typing import Protocol

import structlog
import trio

log = structlog.get_logger("trustmesh.http")

TICK = 0.05  # seconds between sweeps while any read waits under a deadline


class Waiter(Protocol):
    wait_deadline: float  # trio time; math.inf while not waiting under a deadline

    def expire(self) -> None:
        """The deadline passed: wake the waiting read (it raises its timeout)."""


class Sweeper:
    """Wakes reads whose deadline passed; one per trio run (:func:`sweeper`)."""

    def __init__(self) -> None:
        self._waiting: set[Waiter] = set()
        self._wakeup = trio.Event()

    def watch(self, waiter: Waiter) -> None:
        self._waiting.add(waiter)
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
            await trio.sleep(TICK)
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        due = [waiter for waiter in self._waiting if waiter.wait_deadline <= now]
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
