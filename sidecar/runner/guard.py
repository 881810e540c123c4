"""The run's watchdog: if the runner dies, even by SIGKILL, its CA, sidecars and apps go too.

Theory of operation. Children lead their own process groups (so a terminal's Ctrl+C reaches only
the runner, which stops them in order), so nothing takes them down with a dead runner by itself.
Linux's parent-death signal (``PR_SET_PDEATHSIG``) does not fit: it fires when the *thread* that
forked dies, and trio starts processes from worker threads that come and go.

So the runner starts this small process first, with the read end of a pipe as its stdin, and
keeps the only write end. It writes ``+PGID ROLE TICKS`` when a child starts, ``-PGID`` when one
is gone, and ``bye`` when it ends normally. Only the kernel closes the write end for a runner
that was killed: the guard then reads EOF without ``bye`` and stops what is listed, apps first,
then sidecars, then the CA (SIGTERM, SIGKILL after the grace period), and removes the run-state
file if it still names the dead runner. The guard leads its own process group and ignores the
terminal's signals (SIGINT, SIGHUP); it does nothing else, so it is cheap and hard to wedge.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from .runstate import group_alive, process_start_ticks, remove_state

ORDER = {"app": 0, "sidecar": 1, "ca": 2}
POLL = 0.05


def _ours(pgid: int, ticks: int | None) -> bool:
    """The group is still the one the runner started (a live leader must not be a recycled pid)."""
    if ticks is None:
        return group_alive(pgid)
    now = process_start_ticks(pgid)
    return group_alive(pgid) if now is None else now == ticks


def stop_groups(groups: dict[int, tuple[str, int | None]], grace: float) -> None:
    """SIGTERM each role's groups in order, wait up to ``grace``; SIGKILL what is left."""
    for rank in sorted(set(ORDER.values()) | {len(ORDER)}):
        batch = [
            pgid
            for pgid, (role, ticks) in groups.items()
            if ORDER.get(role, len(ORDER)) == rank and _ours(pgid, ticks)
        ]
        for pgid in batch:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(group_alive(p) for p in batch):
            time.sleep(POLL)
        for pgid in batch:
            if group_alive(pgid):
                with contextlib.suppress(OSError):
                    os.killpg(pgid, signal.SIGKILL)


def watch(stream, grace: float) -> tuple[bool, dict[int, tuple[str, int | None]]]:
    """Read the runner's messages until EOF; (said bye?, groups still listed)."""
    groups: dict[int, tuple[str, int | None]] = {}
    for raw in stream:
        line = raw.decode("ascii", "replace").split()
        if not line:
            continue
        if line[0] == "bye":
            return True, groups
        with contextlib.suppress(ValueError, IndexError):
            if line[0].startswith("+"):
                ticks = int(line[2]) if len(line) > 2 and line[2] != "-" else None
                groups[int(line[0][1:])] = (line[1], ticks)
            elif line[0].startswith("-"):
                groups.pop(int(line[0][1:]), None)
    return False, groups


def main(argv: list[str]) -> int:
    for signum in (signal.SIGINT, signal.SIGHUP):  # the terminal's: for the runner to handle
        signal.signal(signum, signal.SIG_IGN)
    runner_pid, grace, state_file = int(argv[0]), float(argv[1]), Path(argv[2])
    said_bye, groups = watch(sys.stdin.buffer, grace)
    if said_bye:
        return 0
    stop_groups(groups, grace)
    remove_state(state_file, runner_pid)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
