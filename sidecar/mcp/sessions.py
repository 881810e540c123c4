"""Who owns what on one MCP server: sessions, their pending list filters, and tasks. Pure state.

An ``Mcp-Session-Id`` is a bearer capability: whoever presents it speaks in that session, reads
its GET stream, resumes it with ``Last-Event-ID`` or ends it with DELETE. Behind a sidecar every
caller reaches the server from the same place, so the server cannot tell callers apart; the
sidecar must. A session belongs to the caller (trust domain + namespace + App ID) whose request
the response that issued it answered; requests naming it from anyone else are refused as if it
did not exist. The same for tasks (2025-11-25 ``tasks/*``): a task id belongs to the caller whose
request created it, within the session it was created in. And the same for SSE event ids: a
``Last-Event-ID`` resumes a stream from an event the server stored, and a server may keep one
event store for every session (the official SDK does) and replay whatever id it is given, so an
event id is a capability too. It belongs to the caller, within the session, whose stream this
sidecar relayed it on; resuming from any other id is refused like an unknown session.

Everything is bounded (least recently used goes first), both in total and per caller, so no
caller can grow the table without limit or push out more than its own share. Forgetting is safe:
a forgotten session or task is refused like an unknown one (the client starts a new session, as
the spec prescribes after a 404), never handed to someone else.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

from .pending import PendingLists

MAX_SESSIONS = 4096
MAX_SESSIONS_PER_CALLER = 256
MAX_TASKS = 8192
MAX_TASKS_PER_CALLER = 512
MAX_EVENT_IDS = 16384
MAX_EVENT_IDS_PER_CALLER = 1024  # resumption needs only the latest ids of a caller's streams
MAX_SEEN_TOOLS = 1024


class _OwnedLru:
    """key → owner, least recently used first, with a per-owner quota. O(1) per operation."""

    def __init__(self, limit: int, per_owner: int) -> None:
        self._limit, self._per_owner = limit, per_owner
        self._owners: OrderedDict[Hashable, Hashable] = OrderedDict()
        self._by_owner: dict[Hashable, OrderedDict[Hashable, None]] = {}
        self.evicted: list[Hashable] = []  # keys dropped by the last claim (for dependants)

    def owner(self, key: Hashable) -> Hashable | None:
        owner = self._owners.get(key)
        if owner is not None:
            self._owners.move_to_end(key)
            self._by_owner[owner].move_to_end(key)
        return owner

    def claim(self, key: Hashable, owner: Hashable) -> bool:
        """Record ``owner`` for a new ``key``; False if someone else holds it already."""
        self.evicted = []
        held = self.owner(key)
        if held is not None:
            return held == owner
        mine = self._by_owner.setdefault(owner, OrderedDict())
        if len(mine) >= self._per_owner:
            self._drop(next(iter(mine)))
        self._owners[key] = owner
        mine[key] = None
        while len(self._owners) > self._limit:
            self._drop(next(iter(self._owners)))
        return True

    def release(self, key: Hashable) -> None:
        if key in self._owners:
            self._drop(key, evicted=False)

    def _drop(self, key: Hashable, *, evicted: bool = True) -> None:
        owner = self._owners.pop(key)
        mine = self._by_owner[owner]
        del mine[key]
        if not mine:
            del self._by_owner[owner]
        if evicted:
            self.evicted.append(key)

    def __len__(self) -> int:
        return len(self._owners)


class McpSessions:
    """Sessions, tasks and pending list filters of one MCP server, keyed by caller identity.

    ``caller`` is the peer's ``AppIdentity`` (any hashable identity with the same equality).
    """

    def __init__(
        self,
        limit: int = MAX_SESSIONS,
        *,
        per_caller: int = MAX_SESSIONS_PER_CALLER,
        task_limit: int = MAX_TASKS,
        tasks_per_caller: int = MAX_TASKS_PER_CALLER,
        event_limit: int = MAX_EVENT_IDS,
        events_per_caller: int = MAX_EVENT_IDS_PER_CALLER,
    ) -> None:
        self._sessions = _OwnedLru(limit, per_caller)
        self._tasks = _OwnedLru(task_limit, tasks_per_caller)
        self._events = _OwnedLru(event_limit, events_per_caller)  # (session, event id) → caller
        self._pending: dict[str, PendingLists] = {}  # by session id; only owners reach them
        # The tool names the server listed (unfiltered), for the CLI's typo warnings; the
        # callback (the runtime's) is told only when the set grows.
        self.seen_tools: frozenset[str] = frozenset()
        self.on_tools_seen: Callable[[frozenset[str]], None] | None = None
        # session id → its task and event keys, forgotten with the session
        self._session_tasks: dict[Hashable, set[tuple]] = {}
        self._session_events: dict[Hashable, set[tuple]] = {}
        # (session id, task id) → the tool whose call created it, while the task is known
        self._task_tools: dict[tuple, str] = {}

    # -- sessions ------------------------------------------------------------------------------
    def owner(self, session_id: str) -> Hashable | None:
        return self._sessions.owner(session_id)

    def claim(self, caller: Hashable, session_id: str) -> bool:
        """A response issued ``session_id`` to ``caller``: record it (False: held by another)."""
        claimed = self._sessions.claim(session_id, caller)
        for dropped in self._sessions.evicted:
            self._forget(dropped)
        return claimed

    def get(self, caller: Hashable, session_id: str | None) -> PendingLists:
        """The pending list filters of ``caller``'s session (a fresh set when stateless).

        Only sessions this caller owns keep state here, so the table is as bounded as the
        ownership table; a request naming a session it does not own never gets this far (the
        judge refuses it with :func:`check_session_owner`), and gets a throw-away set if it did.
        """
        if session_id is None or self._sessions.owner(session_id) != caller:
            return PendingLists()  # stateless (2026-07-28): the request is the session
        pending = self._pending.get(session_id)
        if pending is None:
            pending = self._pending[session_id] = PendingLists()
        return pending

    def end(self, caller: Hashable, session_id: str | None) -> None:
        """The owner ended ``session_id`` (DELETE answered 2xx): forget it, its tasks and
        event ids."""
        if session_id is not None and self._sessions.owner(session_id) == caller:
            self._sessions.release(session_id)
            self._forget(session_id)

    def _forget(self, session_id: Hashable) -> None:
        self._pending.pop(session_id, None)
        for task in self._session_tasks.pop(session_id, ()):
            self._tasks.release(task)
            self._task_tools.pop(task, None)
        for event in self._session_events.pop(session_id, ()):
            self._events.release(event)

    # -- tasks ---------------------------------------------------------------------------------
    def claim_task(
        self, caller: Hashable, session_id: str | None, task_id: str, tool: str | None = None
    ) -> bool:
        """A response created ``task_id`` for ``caller`` (False: another caller holds it), in
        answer to a call of ``tool`` (when known), so its result stays behind that grant."""
        key = (session_id, task_id)
        claimed = _claim_in_session(
            self._tasks, self._session_tasks, caller, key, forget=self._task_tools
        )
        if claimed and tool is not None and self._tasks.owner(key) is not None:
            self._task_tools[key] = tool
        return claimed

    def task_owner(self, session_id: str | None, task_id: str) -> Hashable | None:
        return self._tasks.owner((session_id, task_id))

    def task_tool(self, session_id: str | None, task_id: str) -> str | None:
        """The tool whose call created the task (None: not known, or the task forgotten)."""
        return self._task_tools.get((session_id, task_id))

    # -- SSE event ids ---------------------------------------------------------------------------
    def saw_event(self, caller: Hashable, session_id: str | None, event_id: str) -> bool:
        """This sidecar relayed an event with ``event_id`` to ``caller`` on a stream of
        ``session_id`` (False: the server used that id in another caller's stream as well)."""
        return _claim_in_session(self._events, self._session_events, caller, (session_id, event_id))

    def event_owner(self, session_id: str | None, event_id: str) -> Hashable | None:
        """Whom this sidecar relayed ``event_id`` to in ``session_id`` (None: never relayed, or
        forgotten)."""
        return self._events.owner((session_id, event_id))

    # -- what the server offers ------------------------------------------------------------------
    def saw_tools(self, names) -> None:
        new = self.seen_tools | {n for n in names if isinstance(n, str)}
        if new == self.seen_tools or len(new) > MAX_SEEN_TOOLS:
            return
        self.seen_tools = frozenset(new)
        if self.on_tools_seen is not None:
            self.on_tools_seen(self.seen_tools)

    # -- sizes (tests and status) --------------------------------------------------------------
    def counts(self) -> tuple[int, int, int]:
        """(sessions, tasks, sessions with pending list state)."""
        return len(self._sessions), len(self._tasks), len(self._pending)

    def event_count(self) -> int:
        """SSE event ids remembered for resumption."""
        return len(self._events)


def _claim_in_session(
    table: _OwnedLru,
    by_session: dict[Hashable, set[tuple]],
    caller: Hashable,
    key: tuple,
    forget: dict[tuple, object] | None = None,
) -> bool:
    """Claim ``key`` = (session id, id) in ``table`` and index it under its session, so ending
    or evicting the session forgets it; keys the table evicted leave the index (and
    ``forget``) too."""
    claimed = table.claim(key, caller)
    for dropped in table.evicted:
        if forget is not None:
            forget.pop(dropped, None)
        keys = by_session.get(dropped[0])
        if keys is not None:
            keys.discard(dropped)
            if not keys:
                del by_session[dropped[0]]
    if claimed and key[0] is not None:
        by_session.setdefault(key[0], set()).add(key)
    return claimed


def seen_tools_path(home: Path, namespace: str, app_id: str) -> Path:
    """Where a sidecar notes the tool names its MCP server listed (read by ``access grant``)."""
    return Path(home) / "mcp" / "seen-tools" / f"{namespace}.{app_id}.json"


def write_seen_tools(path: Path, names: frozenset[str]) -> None:
    """Write the names atomically (rare: only when the server lists a tool not seen before)."""
    from identity import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, json.dumps(sorted(names)).encode(), mode=0o600)
    except OSError:
        pass  # a hint for the CLI only: never a reason to fail the response carrying the list


def read_seen_tools(path: Path) -> list[str] | None:
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else None
