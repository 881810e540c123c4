"""List responses that must be filtered before they reach the caller.

``inspect_request`` says which list requests a body carries (``PendingFilter``); the response
path filters the response with the same id. On 2025-era Streamable HTTP a response may arrive on
the POST's SSE stream, or — after the POST stream broke — on a resumed GET stream, so the set of
pending ids lives in a small mutable ``PendingLists`` that every stream of one session consults.

Keep one ``PendingLists`` per caller session (``Mcp-Session-Id``; per request on 2026-07-28, which
has neither sessions nor GET streams): JSON-RPC ids are only unique within a session. An entry is
removed only when its response has been filtered, never on failure, so a late replay of the same
response is still filtered. The set is bounded; when it is full, new list requests are refused
rather than older entries forgotten (forgetting would let a list through unfiltered).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import PendingOverflow
from .jsonrpc import RequestId, id_key
from .policy import Caller, MCPServerAccessPolicy

DEFAULT_MAX_PENDING = 256


@dataclass(frozen=True, slots=True)
class PendingFilter:
    """One list request whose response must be filtered for ``caller`` (namespace + App ID)."""

    request_id: RequestId
    method: str  # tools/list | resources/list | resources/templates/list | prompts/list
    caller: Caller
    policy: MCPServerAccessPolicy  # the policy the request was judged under
    protocol_version: str

    @property
    def key(self) -> tuple[str, RequestId]:
        key = id_key(self.request_id)
        if key is None:  # inspect_request never builds one; guard the invariant anyway
            raise ValueError(f"invalid request id {self.request_id!r}")
        return key


class PendingLists:
    """The shared, bounded set of list responses awaiting filtering, keyed by request id."""

    def __init__(self, filters: Iterable[PendingFilter] = (), *, limit: int = DEFAULT_MAX_PENDING):
        self._limit = limit
        self._by_id: dict[tuple[str, RequestId], PendingFilter] = {}
        if filters:
            self.add_all(filters)

    def add(self, pending: PendingFilter) -> None:
        if pending.key not in self._by_id and len(self._by_id) >= self._limit:
            raise PendingOverflow(f"more than {self._limit} list responses are awaiting filtering")
        self._by_id[pending.key] = pending

    def add_all(self, filters: Iterable[PendingFilter]) -> None:
        for pending in filters:
            self.add(pending)

    def get(self, request_id: object) -> PendingFilter | None:
        key = id_key(request_id)
        return None if key is None else self._by_id.get(key)

    def discard(self, request_id: object) -> None:
        key = id_key(request_id)
        if key is not None:
            self._by_id.pop(key, None)

    def ids(self) -> tuple[RequestId, ...]:
        return tuple(p.request_id for p in self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def __iter__(self) -> Iterator[PendingFilter]:
        return iter(tuple(self._by_id.values()))

    def __contains__(self, request_id: object) -> bool:
        return self.get(request_id) is not None
