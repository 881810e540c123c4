"""The ``MCPServerAccessPolicy`` resource: parse once, evaluate many times, edit as values.

Shape (the hosted product's, ``reference/hosted-tool-access.txt``)::

    apiVersion: trustmesh.dev/v1alpha1        # or cra.diagrid.io/v1beta1
    kind: MCPServerAccessPolicy
    metadata: {name: mcp-server}
    spec:
      mcpServerRef: mcp-server                # defaults to metadata.name
      rules:                                  # empty or absent ⇒ deny everything
        - callers:
            - appID: analyst-agent            # exact App ID, or "*"
              namespace: dev                  # optional: default the server's own; "*" = any
          grants:
            - capability: tools               # tools | resources | prompts
              names: [add, echo]              # exact names / URIs, or "*"
              requiredScopes: [mcp.tools]     # optional; enforced by the bearer layer

Identity is namespace + App ID (DESIGN "Names and formats"): a caller entry without a
``namespace`` means the MCP server's own namespace (``server_namespace``, which the sidecar sets
to its own), never "any namespace"; ``*`` for either part matches anything only where written.
So a grant for ``analyst-agent`` does not serve ``spiffe://…/ns/dev/analyst-agent``.

Semantics: an item is allowed iff some rule matches the caller *and* has a grant for the
capability listing the item or ``*``. Comparison is exact — no case folding, no Unicode
normalisation, no trimming — because the upstream compares exactly too (SEP-986 names are
case-sensitive). The first rule (document order) that allows an item is the one reported, and the
``requiredScopes`` of that grant are the ones ``required_scopes`` returns.

The CLI transforms (``grant``/``revoke``/``revoke_all``) return new policies; they edit only rules
that name the caller explicitly. A rule for ``*`` is never narrowed by revoking one caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from identity import DEFAULT_NAMESPACE, IdentityError, validate_app_id, validate_namespace
from sidecar.errors import ResourceInvalid
from sidecar.policy.decision import Decision

from .methods import CAPABILITIES, Capability

API_VERSIONS = ("trustmesh.dev/v1alpha1", "cra.diagrid.io/v1beta1")
KIND = "MCPServerAccessPolicy"
WILDCARD = "*"
_LAYER = "mcp"
_ITEM_WORD = {"tools": "tool", "resources": "resource", "prompts": "prompt"}


@dataclass(frozen=True, slots=True)
class Grant:
    capability: Capability
    names: tuple[str, ...]
    required_scopes: tuple[str, ...] = ()

    def covers(self, name: str) -> bool:
        return WILDCARD in self.names or name in self.names


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: a namespace and an App ID (what an ``AppIdentity`` also offers)."""

    namespace: str
    app_id: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.app_id}"


@dataclass(frozen=True, slots=True)
class CallerRef:
    """One ``callers[]`` entry: an App ID (or ``*``) in a namespace (None: the server's own)."""

    app_id: str
    namespace: str | None = None

    def effective(self, server_namespace: str) -> tuple[str, str]:
        return (self.namespace or server_namespace, self.app_id)

    def matches(self, caller: Caller, server_namespace: str) -> bool:
        namespace, app_id = self.effective(server_namespace)
        return (app_id == WILDCARD or app_id == caller.app_id) and (
            namespace == WILDCARD or namespace == caller.namespace
        )

    def label(self) -> str:
        """``app`` for the server's namespace (as written), else ``namespace/app``."""
        return self.app_id if self.namespace is None else f"{self.namespace}/{self.app_id}"


@dataclass(frozen=True, slots=True)
class Rule:
    callers: tuple[CallerRef, ...]
    grants: tuple[Grant, ...]

    def matches(self, caller: Caller, server_namespace: str) -> bool:
        return any(ref.matches(caller, server_namespace) for ref in self.callers)

    def names_only(self, ref: CallerRef, server_namespace: str) -> bool:
        """This rule is ``ref``'s own: it names exactly that caller and nobody else."""
        return len(self.callers) == 1 and self.callers[0].effective(
            server_namespace
        ) == ref.effective(server_namespace)


@dataclass(frozen=True, slots=True)
class MCPServerAccessPolicy:
    name: str
    server_ref: str
    rules: tuple[Rule, ...] = ()
    api_version: str = API_VERSIONS[0]
    metadata_extra: tuple[tuple[str, Any], ...] = ()  # namespace/labels/annotations, kept as-is
    # The MCP server's own namespace: what a caller entry without ``namespace`` means. The
    # sidecar sets its own (``in_namespace``); the CLI the one the server is registered in.
    server_namespace: str = DEFAULT_NAMESPACE

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> MCPServerAccessPolicy:
        return parse_policy(document)

    @classmethod
    def deny_all(cls, name: str) -> MCPServerAccessPolicy:
        return cls(name=name, server_ref=name)

    def in_namespace(self, namespace: str) -> MCPServerAccessPolicy:
        """The policy as the MCP server in ``namespace`` enforces it."""
        return (
            self
            if namespace == self.server_namespace
            else replace(self, server_namespace=namespace)
        )


# --- parsing ------------------------------------------------------------------------------------


def _keys(obj: Any, allowed: Iterable[str], required: Iterable[str], where: str) -> Mapping:
    if not isinstance(obj, Mapping):
        raise ResourceInvalid(f"must be a mapping, not {type(obj).__name__}", where)
    allowed = tuple(allowed)
    for key in obj:
        if key not in allowed:
            raise ResourceInvalid(
                f"unknown field {key!r} (expected one of {', '.join(allowed)})",
                f"{where}.{key}" if where else str(key),
            )
    for key in required:
        if key not in obj:
            raise ResourceInvalid("is required", f"{where}.{key}" if where else key)
    return obj


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ResourceInvalid("must be a non-empty string", where)
    if value != value.strip():
        raise ResourceInvalid(f"{value!r} has leading or trailing whitespace", where)
    return value


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ResourceInvalid(f"must be a list, not {type(value).__name__}", where)
    items = tuple(_string(item, f"{where}[{i}]") for i, item in enumerate(value))
    return tuple(dict.fromkeys(items))


def _parse_grant(obj: Any, where: str) -> Grant:
    _keys(obj, ("capability", "names", "requiredScopes"), ("capability", "names"), where)
    capability = obj["capability"]
    if capability not in CAPABILITIES:
        raise ResourceInvalid(
            f"{capability!r} is not one of {', '.join(CAPABILITIES)}", f"{where}.capability"
        )
    names = _string_list(obj["names"], f"{where}.names")
    scopes = _string_list(obj.get("requiredScopes", []), f"{where}.requiredScopes")
    for i, scope in enumerate(scopes):
        if any(c.isspace() for c in scope) or '"' in scope or "\\" in scope:
            raise ResourceInvalid(
                f"{scope!r} is not an OAuth scope token", f"{where}.requiredScopes[{i}]"
            )
    return Grant(capability, _normalise_names(names), scopes)


def _caller_ref(app_id: str, namespace: str | None, where: str) -> CallerRef:
    """A validated caller entry: a name that can never be a real App ID or namespace is a typo
    that would silently grant nothing, so it is refused."""
    try:
        if app_id != WILDCARD:
            validate_app_id(app_id)
    except IdentityError as exc:
        raise ResourceInvalid(str(exc), f"{where}.appID") from None
    try:
        if namespace is not None and namespace != WILDCARD:
            validate_namespace(namespace)
    except IdentityError as exc:
        raise ResourceInvalid(str(exc), f"{where}.namespace") from None
    return CallerRef(app_id, namespace)


def _parse_rule(obj: Any, where: str) -> Rule:
    _keys(obj, ("callers", "grants"), ("callers",), where)
    raw_callers = obj["callers"]
    if not isinstance(raw_callers, list) or not raw_callers:
        raise ResourceInvalid("must be a non-empty list", f"{where}.callers")
    callers = []
    for i, caller in enumerate(raw_callers):
        at = f"{where}.callers[{i}]"
        _keys(caller, ("appID", "namespace"), ("appID",), at)
        app_id = _string(caller["appID"], f"{at}.appID")
        namespace = caller.get("namespace")
        if namespace is not None:
            namespace = _string(namespace, f"{at}.namespace")
        callers.append(_caller_ref(app_id, namespace, at))
    raw_grants = obj.get("grants") or []
    if not isinstance(raw_grants, list):
        raise ResourceInvalid("must be a list", f"{where}.grants")
    grants = tuple(_parse_grant(g, f"{where}.grants[{i}]") for i, g in enumerate(raw_grants))
    return Rule(tuple(dict.fromkeys(callers)), grants)


def parse_policy(
    document: Mapping[str, Any], *, server_namespace: str | None = None
) -> MCPServerAccessPolicy:
    """Validate ``document`` and build the policy, or raise ``ResourceInvalid`` with a location.

    ``server_namespace`` is the namespace the MCP server runs in (the sidecar passes its own);
    without it, ``metadata.namespace``, else ``default``.
    """
    _keys(
        document, ("apiVersion", "kind", "metadata", "spec"), ("apiVersion", "kind", "metadata"), ""
    )
    if document["apiVersion"] not in API_VERSIONS:
        raise ResourceInvalid(
            f"{document['apiVersion']!r} is not one of {', '.join(API_VERSIONS)}", "apiVersion"
        )
    if document["kind"] != KIND:
        raise ResourceInvalid(f"{document['kind']!r} is not {KIND}", "kind")
    metadata = _keys(
        document["metadata"], ("name", "namespace", "labels", "annotations"), ("name",), "metadata"
    )
    name = _string(metadata["name"], "metadata.name")
    spec = document.get("spec") or {}
    _keys(spec, ("mcpServerRef", "rules"), (), "spec")
    server_ref = _string(spec.get("mcpServerRef", name), "spec.mcpServerRef")
    raw_rules = spec.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ResourceInvalid("must be a list", "spec.rules")
    rules = tuple(_parse_rule(r, f"spec.rules[{i}]") for i, r in enumerate(raw_rules))
    extra = tuple((k, v) for k, v in metadata.items() if k != "name")
    if server_namespace is None:
        server_namespace = metadata.get("namespace")
        if server_namespace is None:
            server_namespace = DEFAULT_NAMESPACE
        else:
            server_namespace = _string(server_namespace, "metadata.namespace")
    return MCPServerAccessPolicy(
        name, server_ref, rules, document["apiVersion"], extra, server_namespace
    )


def to_document(policy: MCPServerAccessPolicy) -> dict[str, Any]:
    """The canonical document (what the CLI writes and ``access get`` prints)."""
    rules = []
    for rule in policy.rules:
        grants = []
        for grant in rule.grants:
            entry: dict[str, Any] = {"capability": grant.capability, "names": list(grant.names)}
            if grant.required_scopes:
                entry["requiredScopes"] = list(grant.required_scopes)
            grants.append(entry)
        callers = [
            {"appID": c.app_id, **({} if c.namespace is None else {"namespace": c.namespace})}
            for c in rule.callers
        ]
        rules.append({"callers": callers, "grants": grants})
    return {
        "apiVersion": policy.api_version,
        "kind": KIND,
        "metadata": {"name": policy.name, **dict(policy.metadata_extra)},
        "spec": {"mcpServerRef": policy.server_ref, "rules": rules},
    }


# --- evaluation ---------------------------------------------------------------------------------

CallerLike = Any  # an AppIdentity, a Caller, or text: "namespace/app-id" or a bare App ID


def as_caller(caller: CallerLike, server_namespace: str) -> Caller:
    """The caller as namespace + App ID.

    The sidecar passes the peer's ``AppIdentity``; people (CLI, tests) may write
    ``namespace/app-id``, or a bare App ID meaning one in the server's own namespace — exactly
    what a bare ``appID`` in a rule means, so the two read alike.
    """
    if isinstance(caller, Caller):
        return caller
    if isinstance(caller, str):
        namespace, sep, app_id = caller.rpartition("/")
        return Caller(namespace if sep else server_namespace, app_id)
    namespace, app_id = getattr(caller, "namespace", None), getattr(caller, "app_id", None)
    if not isinstance(namespace, str) or not isinstance(app_id, str):
        raise TypeError(f"not a caller identity: {caller!r}")
    return Caller(namespace, app_id)


def _describe(index: int, rule: Rule, grant: Grant) -> str:
    return (
        f"rules[{index}] callers=[{', '.join(c.label() for c in rule.callers)}] "
        f"grants {grant.capability}=[{', '.join(grant.names)}]"
    )


def _first_match(
    policy: MCPServerAccessPolicy, caller: Caller, capability: str, name: str
) -> tuple[int, Rule, Grant] | None:
    """The reference rule scan: the first rule (document order) that matches ``caller`` and has
    a grant for ``capability`` covering ``name``. :class:`CallerGrants` answers the same
    question from a table (``tests/property/test_mcp_grants_table.py`` holds them equal)."""
    for index, rule in enumerate(policy.rules):
        if not rule.matches(caller, policy.server_namespace):
            continue
        for grant in rule.grants:
            if grant.capability == capability and grant.covers(name):
                return index, rule, grant
    return None


def item_word(capability: str) -> str:
    return _ITEM_WORD.get(capability, capability)


_ALLOWED_KEPT = 512  # allow decisions kept per caller (names may be anything under a "*" grant)


class CallerGrants:
    """What one policy grants one caller, worked out once: every request of that caller under
    that policy asks the same questions (any grant at all? this tool?), so the rule scan, the
    caller's label and the allow decisions are computed on first use and then looked up.

    A table per (policy object, caller); a new policy is a new object, so a reload can never be
    answered from the old one's table (:func:`grants_for`).
    """

    __slots__ = ("_allowed", "_by_name", "_matches", "_wildcard", "any_grant", "caller")
    __slots__ += ("capabilities", "label", "policy")

    def __init__(self, policy: MCPServerAccessPolicy, caller: Caller) -> None:
        namespace = policy.server_namespace
        self.policy, self.caller = policy, caller
        self.label = caller.app_id if caller.namespace == namespace else str(caller)
        # Every grant of every rule matching the caller, in document order: the order in which
        # _first_match would try them.
        self._matches = tuple(
            (index, rule, grant)
            for index, rule in enumerate(policy.rules)
            if rule.matches(caller, namespace)
            for grant in rule.grants
        )
        self.any_grant = any(grant.names for _, _, grant in self._matches)
        self.capabilities = frozenset(g.capability for _, _, g in self._matches if g.names)
        self._by_name: dict[tuple[str, str], int] = {}  # (capability, name) → first position
        self._wildcard: dict[str, int] = {}  # capability → first position of a "*" grant
        for position, (_, _, grant) in enumerate(self._matches):
            if WILDCARD in grant.names:
                self._wildcard.setdefault(grant.capability, position)
            for name in grant.names:
                self._by_name.setdefault((grant.capability, name), position)
        self._allowed: dict[tuple[str, str], Decision] = {}

    def first_match(self, capability: str, name: str) -> tuple[int, Rule, Grant] | None:
        """What ``_first_match`` returns, from the table: the earlier of the first grant naming
        ``name`` and the first ``*`` grant for the capability."""
        position = self._by_name.get((capability, name))
        wildcard = self._wildcard.get(capability)
        if position is None or (wildcard is not None and wildcard < position):
            position = wildcard
        return None if position is None else self._matches[position]

    def authorize(self, capability: str, name: str) -> Decision:
        key = (capability, name)
        decision = self._allowed.get(key)
        if decision is not None:
            return decision
        policy, word, label = self.policy, item_word(capability), self.label
        match = self.first_match(capability, name)
        if match is None:
            return Decision.deny(
                _LAYER,
                f"{word}_not_granted",
                f"{word} {name!r} is not granted to caller {label!r}",
                403,
                rule=f"policy {policy.name}: no rule grants it"
                if policy.rules
                else f"policy {policy.name}: no rules (deny all)",
            )
        index, rule, grant = match
        decision = Decision.allow(
            _LAYER,
            f"{word}_granted",
            f"{word} {name!r} is granted to caller {label!r}",
            rule=_describe(index, rule, grant),
        )
        if len(self._allowed) >= _ALLOWED_KEPT:
            self._allowed.clear()
        self._allowed[key] = decision
        return decision


_POLICIES_KEPT = 8  # the policy in force and a few recent ones (requests judged across a reload)
_CALLERS_KEPT = 1024
# id(policy) → (the policy, {(namespace, app id): CallerGrants}). The policy is held, so its id
# cannot be reused by another object while the entry exists; the identity check is a guard.
_TABLES: dict[int, tuple[MCPServerAccessPolicy, dict[tuple[str, str], CallerGrants]]] = {}


def grants_for(policy: MCPServerAccessPolicy, caller: CallerLike) -> CallerGrants:
    """The (cached) :class:`CallerGrants` of ``caller`` under ``policy``."""
    entry = _TABLES.get(id(policy))
    if entry is None or entry[0] is not policy:
        if len(_TABLES) >= _POLICIES_KEPT:
            _TABLES.clear()
        entry = _TABLES[id(policy)] = (policy, {})
    namespace, app_id = getattr(caller, "namespace", None), getattr(caller, "app_id", None)
    if type(namespace) is not str or type(app_id) is not str:
        who = as_caller(caller, policy.server_namespace)
        namespace, app_id = who.namespace, who.app_id
    table = entry[1]
    grants = table.get((namespace, app_id))
    if grants is None:
        if len(table) >= _CALLERS_KEPT:
            table.clear()
        grants = table[(namespace, app_id)] = CallerGrants(policy, Caller(namespace, app_id))
    return grants


def caller_label(policy: MCPServerAccessPolicy, caller: CallerLike) -> str:
    """How messages name a caller: the bare App ID in the server's namespace, else ns/app."""
    return grants_for(policy, caller).label


def authorize_item(
    policy: MCPServerAccessPolicy, caller: CallerLike, capability: str, name: str
) -> Decision:
    """Allow iff a rule matches the caller and grants ``name`` (or ``*``) for ``capability``."""
    return grants_for(policy, caller).authorize(capability, name)


def is_granted(
    policy: MCPServerAccessPolicy, caller: CallerLike, capability: str, name: str
) -> bool:
    return grants_for(policy, caller).first_match(capability, name) is not None


def caller_has_any_grant(policy: MCPServerAccessPolicy, caller: CallerLike) -> bool:
    return grants_for(policy, caller).any_grant


def caller_has_capability(
    policy: MCPServerAccessPolicy, caller: CallerLike, capability: str
) -> bool:
    return capability in grants_for(policy, caller).capabilities


def required_scopes(
    policy: MCPServerAccessPolicy, caller: CallerLike, capability: str, name: str
) -> tuple[str, ...] | None:
    """Scopes the bearer token must hold for an allowed item; ``None`` when it is not granted."""
    match = grants_for(policy, caller).first_match(capability, name)
    return None if match is None else match[2].required_scopes


# --- transforms for the CLI ---------------------------------------------------------------------


def _normalise_names(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(names))
    return (WILDCARD,) if WILDCARD in names else names


def caller_ref(caller: str | CallerRef) -> CallerRef:
    """``app-id``, ``namespace/app-id`` (either may be ``*``) as a rule's caller entry."""
    if isinstance(caller, CallerRef):
        return caller
    _string(caller, "caller")
    namespace, sep, app_id = caller.rpartition("/")
    return _caller_ref(app_id, namespace if sep else None, "caller")


def _check_edit(capability: str, names: Sequence[str]) -> None:
    if capability not in CAPABILITIES:
        raise ResourceInvalid(
            f"{capability!r} is not one of {', '.join(CAPABILITIES)}", "capability"
        )
    if not names:
        raise ResourceInvalid("at least one name is required", "names")
    for i, name in enumerate(names):
        _string(name, f"names[{i}]")


def grant(
    policy: MCPServerAccessPolicy,
    caller: str | CallerRef,
    capability: Capability,
    names: Sequence[str],
    *,
    required_scopes: Sequence[str] = (),
) -> MCPServerAccessPolicy:
    """Merge ``names`` into the caller's own rule (one whose callers are exactly ``[caller]``)."""
    ref = caller_ref(caller)
    _check_edit(capability, names)
    scopes = tuple(dict.fromkeys(required_scopes))
    rules = list(policy.rules)
    for index, rule in enumerate(rules):
        if not rule.names_only(ref, policy.server_namespace):
            continue
        grants = list(rule.grants)
        for gi, existing in enumerate(grants):
            if existing.capability == capability and existing.required_scopes == scopes:
                grants[gi] = replace(existing, names=_normalise_names((*existing.names, *names)))
                break
        else:
            grants.append(Grant(capability, _normalise_names(names), scopes))
        rules[index] = replace(rule, grants=tuple(grants))
        return replace(policy, rules=tuple(rules))
    rules.append(Rule((ref,), (Grant(capability, _normalise_names(names), scopes),)))
    return replace(policy, rules=tuple(rules))


def _without(grants: Iterable[Grant], capability: str, names: Sequence[str]) -> tuple[Grant, ...]:
    kept = []
    for g in grants:
        if g.capability != capability:
            kept.append(g)
            continue
        if WILDCARD in names:
            continue  # revoking "*" removes every grant of this capability
        if WILDCARD in g.names:
            raise ResourceInvalid(
                f"cannot revoke {', '.join(names)} from a '*' grant; revoke '*' and grant the "
                "names to keep",
                "names",
            )
        remaining = tuple(n for n in g.names if n not in names)
        if remaining:
            kept.append(replace(g, names=remaining))
    return tuple(kept)


def _split(rule: Rule, ref: CallerRef, server_namespace: str) -> tuple[tuple[CallerRef, ...], bool]:
    """(the rule's other callers, whether it names ``ref`` at all) — by effective identity."""
    key = ref.effective(server_namespace)
    others = tuple(c for c in rule.callers if c.effective(server_namespace) != key)
    return others, len(others) != len(rule.callers)


def revoke(
    policy: MCPServerAccessPolicy,
    caller: str | CallerRef,
    capability: Capability,
    names: Sequence[str],
) -> MCPServerAccessPolicy:
    """Remove ``names`` from every rule naming ``caller`` explicitly.

    A shared rule (several callers) is split: the caller leaves it and gets its own rule with what
    is left, so the other callers keep their grants.
    """
    ref = caller_ref(caller)
    _check_edit(capability, names)
    rules: list[Rule] = []
    for rule in policy.rules:
        others, named = _split(rule, ref, policy.server_namespace)
        if not named:
            rules.append(rule)
            continue
        remaining = _without(rule.grants, capability, names)
        if not others:
            if remaining:
                rules.append(replace(rule, grants=remaining))
            continue
        rules.append(replace(rule, callers=others))
        if remaining:
            rules.append(Rule((ref,), remaining))
    return replace(policy, rules=tuple(rules))


def revoke_all(policy: MCPServerAccessPolicy, caller: str | CallerRef) -> MCPServerAccessPolicy:
    """Remove ``caller`` from every rule naming it explicitly (``--all``)."""
    ref = caller_ref(caller)
    rules = []
    for rule in policy.rules:
        others, named = _split(rule, ref, policy.server_namespace)
        if others:
            rules.append(replace(rule, callers=others) if named else rule)
    return replace(policy, rules=tuple(rules))
