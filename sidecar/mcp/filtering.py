"""Filter list results down to what the caller is granted — and fail closed.

One decision function serves list and call (``policy.is_granted``), so a caller sees exactly the
items it may use (notes §7). Items are matched on the member the call path uses: ``name`` for
tools and prompts, ``uri`` for resources. Resource *templates* are matched on their
``uriTemplate`` string, literally: a template is listed iff the caller's resources grant is
``*`` or names that exact template string. Granting a template does not grant reading the URIs it
expands to (reads compare URIs exactly); it only makes the template discoverable and usable as a
``completion/complete`` ``ref/resource``.

Everything else in the result — ``nextCursor``, ``_meta``, unknown members — is kept. A filtered
result is per-caller, so on 2026-07-28 (or whenever the upstream sent caching hints) it is marked
``cacheScope: "private"`` with ``ttlMs: 0``, as agentgateway does, so no shared cache reuses it.

Fail closed: a response that does not parse strictly, is not a JSON-RPC response for the pending
id, or whose result lacks the list raises ``ResponseFilterFailed``; the sidecar answers 502 and
the unfiltered body goes nowhere (ToolHive #5257). Entries without a string key are dropped.
Error responses pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import jsonrpc, methods
from .errors import JsonRejected, ResponseFilterFailed
from .jsonstrict import fold_key, loads_strict
from .pending import PendingFilter, PendingLists
from .policy import MCPServerAccessPolicy, is_granted

DEFAULT_MAX_RESPONSE = 32 * 1024 * 1024


def filter_list_result(
    message: Mapping[str, Any],
    method: str,
    caller: Any,
    policy: MCPServerAccessPolicy,
    *,
    protocol_version: str | None = None,
) -> dict[str, Any]:
    """A copy of the JSON-RPC response ``message`` to ``method`` with ungranted items removed."""
    spec = methods.lookup(method)
    if spec is None or spec.list_member is None or spec.capability is None:
        raise ValueError(f"{method!r} is not a list method")
    if not isinstance(message, Mapping):
        raise ResponseFilterFailed(f"{method} response is not a JSON object")
    if "error" in message and "result" not in message:
        return dict(message)
    result = message.get("result")
    if not isinstance(result, Mapping):
        raise ResponseFilterFailed(f"{method} response has no result object")
    items = result.get(spec.list_member)
    if not isinstance(items, list):
        raise ResponseFilterFailed(f"{method} result has no {spec.list_member!r} list")
    key = spec.list_item_key
    kept = [
        item
        for item in items
        if isinstance(item, Mapping)
        and isinstance(item.get(key), str)
        and is_granted(policy, caller, spec.capability, item[key])
    ]
    for item in kept:  # {"name": "add", "Name": "hidden"}: a case-insensitive client reads both
        refuse_look_alikes(item, {key.lower(): key}, f"{spec.list_member}[].")
    new_result = dict(result)
    new_result[spec.list_member] = kept
    if (
        (protocol_version or "") >= methods.HEADERS_REQUIRED_FROM
        or "ttlMs" in result
        or "cacheScope" in result
    ):
        new_result["cacheScope"] = "private"
        new_result["ttlMs"] = 0
    out = dict(message)
    out["result"] = new_result
    return out


# Where each list lives in a result, and the list method it answers.
LIST_MEMBERS = (
    ("tools", "tools/list"),
    ("prompts", "prompts/list"),
    ("resources", "resources/list"),
    ("resourceTemplates", "resources/templates/list"),
)


def list_backstop(
    caller: Any, policy: MCPServerAccessPolicy, protocol_version: str | None = None
) -> Callable[[Any], Any | None]:
    """A filter for list results that answer no *known* request, and for resource updates.

    Filtering by request id alone leaks whenever the id is forgotten or does not match: a
    response replayed on a resumed stream after it was filtered once, a pending entry evicted,
    an id a server rounds (2**53+1 → 2**53). The backstop looks at the content instead: any
    JSON-RPC result carrying a tools, prompts, resources or resource-template list is cut down
    to what ``caller`` is granted. It returns None for a message that holds no list.

    A server→client ``notifications/resources/updated`` names a resource URI: it gets
    :data:`DROP` unless the caller may read that URI now (a server may announce every update to
    every stream, and a subscription outlives a revoked grant).
    """

    def backstop(message: Any) -> Any | None:
        if not isinstance(message, Mapping):
            return None
        if not message.keys() <= _ENVELOPE.keys():  # the usual message spells only these
            refuse_look_alikes(message, _ENVELOPE, "")
        if "method" in message:
            if "result" in message or "error" in message:  # a request and an answer at once
                raise ResponseFilterFailed("a server message holds a method and an answer")
            return _resource_update_check(message, caller, policy)
        error = message.get("error")
        if error is not None and "result" in message:  # which one a client reads is its guess
            raise ResponseFilterFailed("a server message holds both result and error")
        if isinstance(error, Mapping) and not error.keys() <= _ERROR_MEMBERS:  # e.g. "Data"
            refuse_look_alikes(error, _ERROR_DATA, "error.")
        if isinstance(error, Mapping) and isinstance(error.get("data"), Mapping):
            # A list tucked into an error's data reaches the caller all the same.
            data = backstop({"result": error["data"]})
            if data is not None:
                return {**message, "error": {**error, "data": data["result"]}}
            return None
        result = message.get("result")
        if not isinstance(result, Mapping):
            return None
        refuse_look_alikes(result, _RESULT_MEMBERS, "result.")
        filtered = None
        for member, method in LIST_MEMBERS:
            if isinstance(result.get(member), list):
                filtered = filter_list_result(
                    filtered or message, method, caller, policy, protocol_version=protocol_version
                )
        return filtered

    return backstop


# Server messages are read without the case-folding rule of request bodies (tool results may
# hold "id" and "ID"), but a member that folds to one the sidecar judges is another matter: a
# case-insensitive decoder (Go's encoding/json: notes §5.1, GHSA-wvj2-96wp-fq3f) reads "Method",
# "Result", "Tools" or "URI" as the member itself, last one winning, so the caller would act on
# what the sidecar never looked at. Folded form → the one spelling allowed.
_ENVELOPE = {k: k for k in ("jsonrpc", "id", "method", "params", "result", "error")}
_ERROR_DATA = {"data": "data"}
_ERROR_MEMBERS = frozenset({"code", "message", "data"})
# The result members the content check judges: the lists, and the task ids (mcp_route).
_RESULT_MEMBERS = {m.lower(): m for m in (*(member for member, _ in LIST_MEMBERS), "tasks", "task")}


def refuse_look_alikes(obj: Mapping[str, Any], members: Mapping[str, str], where: str) -> None:
    """Raise ``ResponseFilterFailed`` if a key of ``obj`` folds to one of ``members`` (folded form
    → spelling) without being that spelling."""
    for key in obj:
        folded = key.lower() if key.isascii() and key.isprintable() else fold_key(key)
        real = members.get(folded)
        if real is not None and real != key:
            raise ResponseFilterFailed(
                f"server message member {where}{key!r} imitates {where}{real!r}"
            )


class _Drop:
    """The backstop's answer for a message the caller must not get at all."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DROP"


DROP: Any = _Drop()
RESOURCE_UPDATED = "notifications/resources/updated"


def _resource_update_check(message: Mapping[str, Any], caller: Any, policy) -> Any | None:
    """DROP for a resource update whose URI the caller may not read (or that names none)."""
    if message.get("method") != RESOURCE_UPDATED:
        return None
    params = message.get("params")
    if isinstance(params, Mapping):
        refuse_look_alikes(params, {"uri": "uri"}, "params.")
    uri = params.get("uri") if isinstance(params, Mapping) else None
    if isinstance(uri, str) and is_granted(policy, caller, "resources", uri):
        return None
    return DROP


def filter_pending_message(message: Any, pending: PendingFilter) -> Any:
    """Filter one parsed JSON-RPC message known to answer ``pending``."""
    return filter_list_result(
        message,
        pending.method,
        pending.caller,
        pending.policy,
        protocol_version=pending.protocol_version,
    )


def _lookup(pending: PendingLists | Iterable[PendingFilter]) -> PendingLists:
    return pending if isinstance(pending, PendingLists) else PendingLists(pending)


# A JSON object key is written either literally or with a backslash escape; every member a list
# result or a task result could hang off starts with one of the key marks, in any letter case
# (a case-insensitive client reads "Tasks" as tasks; Go also folds "ſ" to s and the Kelvin sign
# to k, hence their UTF-8 among the byte marks), and a resource update (which the backstop may
# drop) names its method literally. UTF-16/32 bodies (which a lenient client might still decode)
# hold NUL bytes; a byte-order mark is checked too.
_KEY_MARKS = (b'"tools"', b'"prompts"', b'"resource', b'"task')
_KEY_MARK = re.compile(b"|".join(map(re.escape, _KEY_MARKS)), re.IGNORECASE)
_BYTE_MARKS = (
    b"resources/updated",  # a resource update in a batch body (the method's value, not a key)
    b"\\",
    b"\x00",
    b"\xef\xbb\xbf",
    "\u017f".encode(),  # ſ
    "\u212a".encode(),  # K (Kelvin)
)


def may_hold_list(body: bytes) -> bool:
    """False only when ``body`` cannot contain a list-shaped (or task) result: the cheap test
    that spares parsing most tool results. Conservative: any escape or odd encoding says yes.
    (``_BYTE_MARKS`` one by one, written out: a generator costs more than the scans.)"""
    return (
        _KEY_MARK.search(body) is not None
        or b"resources/updated" in body
        or b"\\" in body
        or b"\x00" in body
        or b"\xef\xbb\xbf" in body
        or b"\xc5\xbf" in body
        or b"\xe2\x84\xaa" in body
    )


def filter_response_body(
    body: bytes,
    pending: PendingLists | Iterable[PendingFilter],
    *,
    max_bytes: int = DEFAULT_MAX_RESPONSE,
    backstop: Callable[[Any], Any | None] | None = None,
    observe: Callable[[Any], None] | None = None,
) -> bytes:
    """Filter an ``application/json`` response body, or raise ``ResponseFilterFailed``.

    Messages answering pending ids are filtered by the request they answer; with a
    ``backstop``, every message — whatever id it carries, single or in a batch — is filtered by
    its content too (a ``ping`` answered with a tool list; a server that changes an id,
    2**53+1 → 2**53), and the backstop's policy is the one in force now, so a grant revoked
    since the request was judged is honoured. Without a backstop a single response must answer
    a pending id. The original bytes are returned when nothing had to change. Does not mutate
    ``pending``; the caller discards the ids it has answered.
    """
    table = _lookup(pending)
    try:
        document = loads_strict(body, max_bytes=max_bytes, fold_check=False)
    except JsonRejected as exc:
        raise ResponseFilterFailed(f"upstream response could not be read: {exc}") from exc
    if observe is not None:  # what the server said, before anything is cut from it
        for message in document if isinstance(document, list) else (document,):
            observe(message)
    if isinstance(document, list):
        out = [_filter_element(m, table, backstop) for m in document]
        changed = any(a is not b for a, b in zip(out, document, strict=True))
        if changed:
            out = [m for m in out if m is not DROP]
            if not out:  # JSON-RPC: never an empty array (and nothing in it was the caller's)
                raise ResponseFilterFailed(
                    "upstream batch holds only updates the caller may not see"
                )
        return jsonrpc.dumps(out) if changed else body
    if not isinstance(document, dict):
        raise ResponseFilterFailed("upstream response is not a JSON-RPC object")
    entry = table.get(document.get("id")) if "method" not in document else None
    if entry is None:
        if backstop is None:
            raise ResponseFilterFailed(
                f"upstream response id {document.get('id')!r} answers no pending list request"
            )
        again = backstop(document)
        if again is DROP:  # a body that is one notification the caller must not get
            raise ResponseFilterFailed("upstream body is a resource update the caller may not see")
        return body if again is None else jsonrpc.dumps(again)
    return jsonrpc.dumps(_both(filter_pending_message(document, entry), backstop))


def _both(message: Any, backstop: Callable[[Any], Any | None] | None) -> Any:
    """Apply the content backstop on top of an id-based filtering (an intersection of grants)."""
    if backstop is None:
        return message
    again = backstop(message)
    return message if again is None else again


def _filter_element(
    message: Any, table: PendingLists, backstop: Callable[[Any], Any | None] | None
) -> Any:
    if not isinstance(message, dict):
        raise ResponseFilterFailed("upstream batch response holds a non-object element")
    entry = table.get(message.get("id")) if "method" not in message else None
    if entry is not None:
        return _both(filter_pending_message(message, entry), backstop)
    return _both(message, backstop)


def failure_body(request_id: jsonrpc.RequestId | None, reason: str) -> bytes:
    """The JSON-RPC error the sidecar sends (with 502) when a response could not be filtered."""
    return jsonrpc.error_body(
        request_id, jsonrpc.INTERNAL_ERROR, f"upstream response withheld: {reason}"
    )
