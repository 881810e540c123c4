"""Every JSON-RPC method the MCP specification defines, in one table.

Sources: ``schema/<version>/schema.ts`` (the ``ClientRequest``/``ClientNotification``/
``ServerRequest``/``ServerNotification`` unions) and ``docs/specification/2026-07-28/changelog.mdx``
in ``modelcontextprotocol/modelcontextprotocol``. ``introduced`` is the first revision that defines
the method (2024-11-05 is the oldest revision we know); ``removed`` the first revision that no
longer does. Revisions are ``YYYY-MM-DD`` strings and compare correctly as strings.

Notes on the 2026-07-28 revision (stateless MCP): ``initialize``, ``notifications/initialized``,
``ping``, ``logging/setLevel``, ``resources/subscribe``/``unsubscribe`` and
``notifications/roots/list_changed`` are gone; ``server/discover`` and ``subscriptions/listen``
are new; server→client requests (sampling, elicitation, roots) are no longer JSON-RPC messages but
``inputRequests`` embedded in results. Tasks left the core for the ``io.modelcontextprotocol/tasks``
extension, which keeps ``tasks/get`` and ``tasks/cancel``, adds ``tasks/update`` and drops
``tasks/result`` and ``tasks/list``; we list the extension's methods because servers implement it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Category = Literal["tools", "resources", "prompts", "lifecycle-utility", "completion", "tasks"]
Capability = Literal["tools", "resources", "prompts"]
Direction = Literal["client", "server", "both"]  # who may send it
Kind = Literal["request", "notification"]

CAPABILITIES: tuple[Capability, ...] = ("tools", "resources", "prompts")
KNOWN_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28")
DEFAULT_VERSION = (
    "2025-03-26"  # MCP-Protocol-Version absent ⇒ assume 2025-03-26 (2025-06-18 §transports)
)
LAST_BATCH_VERSION = "2025-03-26"  # batching added 2025-03-26, removed 2025-06-18 (PR #416)
HEADERS_REQUIRED_FROM = "2026-07-28"  # Mcp-Method / Mcp-Name (SEP-2243)
VERSION_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str
    category: Category
    kind: Kind
    direction: Direction
    introduced: str
    removed: str | None = None
    # The grant capability that gates it; None for lifecycle/utility methods.
    capability: Capability | None = None
    # Where a gated request names its item: "name" | "uri" | "ref" (completion) |
    # "resourceSubscriptions" (subscriptions/listen); None for list methods (filtered instead).
    item_field: str | None = None
    # For list methods: the result member holding the items, and the item member holding the key.
    list_member: str | None = None
    list_item_key: str | None = None
    note: str = ""

    def defined_in(self, version: str) -> bool:
        return self.introduced <= version and (self.removed is None or version < self.removed)


def _m(
    name: str,
    category: Category,
    kind: Kind,
    direction: Direction,
    introduced: str,
    removed: str | None = None,
    **extra: str | None,
) -> MethodSpec:
    return MethodSpec(name, category, kind, direction, introduced, removed, **extra)  # type: ignore[arg-type]


_V0, _V1, _V2, _V3, _V4 = KNOWN_VERSIONS

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        # --- lifecycle and utilities -------------------------------------------------------
        _m("initialize", "lifecycle-utility", "request", "client", _V0, _V4),
        _m("ping", "lifecycle-utility", "request", "both", _V0, _V4),
        _m("logging/setLevel", "lifecycle-utility", "request", "client", _V0, _V4),
        _m("server/discover", "lifecycle-utility", "request", "client", _V4),
        _m(
            "subscriptions/listen",
            "lifecycle-utility",
            "request",
            "client",
            _V4,
            capability="resources",
            item_field="resourceSubscriptions",
            note="params.notifications.resourceSubscriptions URIs are gated like resources/read",
        ),
        # --- tools --------------------------------------------------------------------------
        _m(
            "tools/list",
            "tools",
            "request",
            "client",
            _V0,
            capability="tools",
            list_member="tools",
            list_item_key="name",
        ),
        _m("tools/call", "tools", "request", "client", _V0, capability="tools", item_field="name"),
        # --- resources ----------------------------------------------------------------------
        _m(
            "resources/list",
            "resources",
            "request",
            "client",
            _V0,
            capability="resources",
            list_member="resources",
            list_item_key="uri",
        ),
        _m(
            "resources/templates/list",
            "resources",
            "request",
            "client",
            _V0,
            capability="resources",
            list_member="resourceTemplates",
            list_item_key="uriTemplate",
        ),
        _m(
            "resources/read",
            "resources",
            "request",
            "client",
            _V0,
            capability="resources",
            item_field="uri",
        ),
        _m(
            "resources/subscribe",
            "resources",
            "request",
            "client",
            _V0,
            _V4,
            capability="resources",
            item_field="uri",
        ),
        _m(
            "resources/unsubscribe",
            "resources",
            "request",
            "client",
            _V0,
            _V4,
            capability="resources",
            item_field="uri",
        ),
        # --- prompts ------------------------------------------------------------------------
        _m(
            "prompts/list",
            "prompts",
            "request",
            "client",
            _V0,
            capability="prompts",
            list_member="prompts",
            list_item_key="name",
        ),
        _m(
            "prompts/get",
            "prompts",
            "request",
            "client",
            _V0,
            capability="prompts",
            item_field="name",
        ),
        # --- completion ---------------------------------------------------------------------
        _m(
            "completion/complete",
            "completion",
            "request",
            "client",
            _V0,
            item_field="ref",
            note="ref/prompt → prompts grant on ref.name; ref/resource → resources on ref.uri",
        ),
        # --- tasks (2025-11-25 core; 2026-07-28 io.modelcontextprotocol/tasks extension) ----
        _m("tasks/get", "tasks", "request", "both", _V3),
        _m("tasks/cancel", "tasks", "request", "both", _V3),
        _m("tasks/result", "tasks", "request", "both", _V3, _V4),
        _m("tasks/list", "tasks", "request", "both", _V3, _V4),
        _m("tasks/update", "tasks", "request", "client", _V4, note="tasks extension"),
        # --- server → client requests (the client only ever answers them) -------------------
        _m("sampling/createMessage", "lifecycle-utility", "request", "server", _V0, _V4),
        _m("roots/list", "lifecycle-utility", "request", "server", _V0, _V4),
        _m("elicitation/create", "lifecycle-utility", "request", "server", _V2, _V4),
        # --- notifications ------------------------------------------------------------------
        _m("notifications/initialized", "lifecycle-utility", "notification", "client", _V0, _V4),
        _m("notifications/cancelled", "lifecycle-utility", "notification", "both", _V0),
        _m("notifications/progress", "lifecycle-utility", "notification", "both", _V0),
        _m(
            "notifications/roots/list_changed",
            "lifecycle-utility",
            "notification",
            "client",
            _V0,
            _V4,
        ),
        _m("notifications/message", "lifecycle-utility", "notification", "server", _V0),
        _m("notifications/resources/updated", "resources", "notification", "server", _V0),
        _m("notifications/resources/list_changed", "resources", "notification", "server", _V0),
        _m("notifications/tools/list_changed", "tools", "notification", "server", _V0),
        _m("notifications/prompts/list_changed", "prompts", "notification", "server", _V0),
        _m(
            "notifications/elicitation/complete",
            "lifecycle-utility",
            "notification",
            "server",
            _V3,
            _V4,
        ),
        _m("notifications/tasks/status", "tasks", "notification", "both", _V3),
        _m(
            "notifications/subscriptions/acknowledged",
            "lifecycle-utility",
            "notification",
            "server",
            _V4,
        ),
    )
}

LIST_METHODS = frozenset(name for name, spec in METHODS.items() if spec.list_member)


def lookup(method: str) -> MethodSpec | None:
    """The table entry for ``method``, compared exactly (method names are case-sensitive)."""
    return METHODS.get(method)


def is_notification_namespace(method: str) -> bool:
    """``notifications/*`` is the spec's namespace for notifications; the design allows it all."""
    return method.startswith("notifications/")
