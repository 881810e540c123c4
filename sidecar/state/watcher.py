"""Keeping a running sidecar's policy current without a restart.

Every quarter second the watcher compares a cheap signature of the store (file stats) with the
last one; on a change it reads a snapshot under the store's shared lock and builds a new policy.
Both run in a worker thread, never on the event loop: reading and parsing files has no place
between two requests, and a slow or hostile file must not stall serving (files are also read
with bounded cost, see :mod:`.yaml_loader`).
A valid result is swapped in whole; an invalid one is logged and reported on ``/v1/status``
while the last good policy stays in force — a broken file never replaces a working policy. A
sidecar that has never had a valid policy denies everything (503) and says why.

A store found *busy* (a writer mid-change) is read again 20 ms later, but only for a while: a
store that stays busy is reported like a refusal and retried once per poll, never in a loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio
import yaml

from identity import AppIdentity

from ..errors import SidecarError
from ..pipeline import InboundPolicy
from ..policy.configuration import validate_configuration_name
from ..ticks import sleep_to_next_tick
from .documents import DocumentError, load_documents, read_file
from .policy_builder import ConfigOverride, build_inbound_policy, deny_all_policy
from .store import MeshStore, StoreBusy
from .tick_signature import STORE_POLL_INTERVAL

log = structlog.get_logger("trustmesh.policy")


class PolicyHolder:
    def __init__(self, initial: InboundPolicy) -> None:
        self.current = initial
        self.generation: int | None = None  # store generation the current policy came from
        self.error: str | None = None
        # The store version of the latest refused load, and the one at which this same error
        # first appeared: ``--wait`` tells "your change broke this sidecar" (the error started
        # at or after the new version) from "this sidecar was already broken" (it started
        # before, and each new version just fails the same way).
        self.error_generation: int | None = None
        self.error_since: int | None = None
        self.loads = 0

    def __call__(self) -> InboundPolicy:
        return self.current

    def refused(self, reason: str, generation: int | None) -> None:
        if reason != self.error or self.error_since is None:
            self.error_since = generation
        self.error, self.error_generation = reason, generation
        if self.generation is None:
            self.current = deny_all_policy(reason)

    def applied(self, policy: InboundPolicy, generation: int) -> None:
        self.current, self.generation = policy, generation
        self.error = self.error_generation = self.error_since = None
        self.loads += 1

    def status(self) -> dict:
        return {
            "version": self.current.version,
            "generation": self.generation,
            "sources": dict(self.current.sources),
            "error": self.error,
            "error_generation": self.error_generation,
            "error_since": self.error_since,
        }


def parse_config_option(value: str | None, store: MeshStore) -> ConfigOverride | None:
    """``--config NAME|FILE``: a store name is a Configuration name (a DNS label) naming no
    file; anything else is a file (a path, a name ending .yaml/.yml, a symlink even dangling),
    so that a missing one fails the start rather than being looked up in the store forever."""
    if value is None:
        return None
    path = Path(value)
    if (
        path.suffix in (".yaml", ".yml")
        or os.path.lexists(path)
        or not _is_configuration_name(value)
    ):
        return ConfigOverride(source=str(path))
    return ConfigOverride(name=value)


def _is_configuration_name(value: str) -> bool:
    try:
        validate_configuration_name(value)
    except SidecarError:
        return False
    return True


def _with_file(override: ConfigOverride | None) -> ConfigOverride | None:
    if override is None or override.source is None:
        return override
    text = read_file(override.source)
    documents = [d for d in load_documents(text, override.source) if d.kind == "Configuration"]
    if len(documents) != 1:
        raise DocumentError(f"{override.source}: expected exactly one Configuration document")
    return ConfigOverride(document=documents[0].body, source=override.source)


def _file_stat(override: ConfigOverride | None) -> tuple:
    """The ``--config`` file's stat. Never raises: it is taken on the event loop, and a file
    that cannot be stat-ed (a symlink loop, a directory this user may not search) is an entry
    of its own, for the load to refuse by name."""
    if override is None or override.source is None:
        return ()
    try:
        st = Path(override.source).stat()
    except FileNotFoundError:
        return (None,)
    except OSError as exc:
        return ("unreadable", exc.errno)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)  # as the store's (store.py)


def current_signature(store: MeshStore, override: ConfigOverride | None) -> tuple:
    return (store.signature(), _file_stat(override))


@dataclass(frozen=True)
class Refused:
    """A load that failed for a reason worth reporting (the last good policy stays)."""

    reason: str
    generation: int | None  # the store version that failed to load, when known


@dataclass(frozen=True)
class Busy:
    """A writer is mid-change (the store's lock is held, kubelet is swapping a set): read
    again in a moment, when it is done."""

    reason: str


# A writer holds the store for the few milliseconds a change takes, so a load that found it
# busy is tried again soon. One that stays busy for BUSY_PATIENCE is no writer mid-change any
# more (a hung ``trustmesh apply``, a store that reports busy for a reason that does not go
# away): the watcher says so, keeps the last good policy, and tries again once per poll
# instead of spinning.
BUSY_RETRY = 0.02
BUSY_PATIENCE = 2.0


def check_for_change(
    store: MeshStore, me: AppIdentity, override: ConfigOverride | None, last: tuple | None
) -> tuple[tuple, tuple[InboundPolicy, int] | Refused | Busy | None]:
    """One load, run in a worker thread: (signature, outcome), outcome None when unchanged.

    Reading files and parsing YAML happen here, so however slow a file is to read, the event
    loop that serves requests and the admin port never waits for it. (Only the signature, a
    few ``stat`` calls, is also taken on the event loop, to skip this hand-off when nothing
    changed.)
    """
    signature = current_signature(store, override)
    if signature == last:
        return signature, None
    generation = None
    try:
        snapshot = store.snapshot(me.app_id, me.namespace, blocking=False)
        generation = snapshot.generation
        policy = build_inbound_policy(snapshot, me, _with_file(override))
    except StoreBusy as exc:
        return signature, Busy(str(exc))
    except (SidecarError, OSError, ValueError, yaml.YAMLError) as exc:
        if generation is None:
            with contextlib.suppress(SidecarError, OSError):
                generation = store.generation()
        return signature, Refused(str(exc), generation)
    return signature, (policy, generation)


async def watch_policy(
    holder: PolicyHolder,
    store: MeshStore,
    me: AppIdentity,
    override: ConfigOverride | None,
    *,
    poll_interval: float = STORE_POLL_INTERVAL,
    store_signature: Callable[[], tuple] | None = None,
    busy_patience: float = BUSY_PATIENCE,
    on_policy=None,
    on_applied=None,
    prepare=None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``holder`` current with ``store``. ``store_signature`` is what the poll compares
    on the event loop (default: ``store.signature``; the runtime passes one listing per tick
    shared with the identity map's watcher, see :mod:`.tick_signature`)."""
    poll_signature = store_signature or store.signature
    # One load at a time per sidecar; a cancelled sidecar does not wait for a load to finish
    # (the thread's result is dropped, and nothing it does touches the serving state).
    limiter = trio.CapacityLimiter(1)
    signature = None
    started = False
    busy_since: float | None = None  # when the loads started finding the store busy
    while True:
        if started and (poll_signature(), _file_stat(override)) == signature:
            # Nothing changed (the common case, four times a second): a few stat calls, made
            # here (as the identity map's watcher does) rather than in a worker thread, whose
            # hand-off costs more than they do. Loading a changed policy stays in the thread.
            await sleep_to_next_tick(poll_interval)
            continue
        current, outcome = await trio.to_thread.run_sync(
            check_for_change,
            store,
            me,
            override,
            signature,
            limiter=limiter,
            abandon_on_cancel=True,
        )
        if not isinstance(outcome, Busy):
            busy_since = None
        elif busy_since is None:
            busy_since = trio.current_time()
        if busy_since is not None and trio.current_time() - busy_since < busy_patience:
            await trio.sleep(BUSY_RETRY)  # a writer is mid-change: it will be done soon
            continue
        if isinstance(outcome, Busy):
            _report_busy(holder, outcome, busy_patience)
        elif isinstance(outcome, Refused):
            signature = current
            holder.refused(outcome.reason, outcome.generation)
            log.error("policy refused; keeping the last good one", error=outcome.reason)
        elif outcome is not None:
            signature = current
            policy, generation = outcome
            if prepare is not None and started:
                # e.g. fetch a new bearer component's keys first (bounded), so the exchanges
                # under way are not judged again against none. Not before the first policy:
                # nothing is under way yet, and the start must not wait on an issuer.
                await prepare(policy)
            if on_policy is not None:
                on_policy(policy)  # e.g. warm the bearer keys before the first request
            holder.applied(policy, generation)
            log.info("policy applied", version=policy.version, sources=dict(policy.sources))
            if on_applied is not None:
                on_applied(policy)  # e.g. cut the exchanges under way that it refuses
        if not started:
            started = True
            task_status.started()
        await sleep_to_next_tick(poll_interval)


def _report_busy(holder: PolicyHolder, outcome: Busy, patience: float) -> None:
    """The store stayed busy past ``patience``: say why, keeping the last good policy. The
    signature is left as it was, so the next poll tries again (once per poll, not spinning)."""
    reason = f"{outcome.reason} (busy for over {patience:g}s; still trying)"
    if holder.error != reason:
        log.error("policy store stays busy; keeping the last good one", error=reason)
    holder.refused(reason, None)  # no store version: nothing was refused, --wait waits on
