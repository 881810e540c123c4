"""The ``MCPServerAccessPolicy`` resource: parse once, evaluate many times, edit as values.

Shape (the hosted product's, ``reference/hosted-tool-access.txt``)::

    apiVersion: trustmesh.dev/v1alpha1        # or cra.diagrid.io/v1beta1
    kind: MCPServerAccessPolicy
    metadata: {name: mcp-server}
    spec:
      mcpServerRef: mcp-server                # defaults to metadata.name
      rules:                                  # empty or absent ⇒ deny everything
        - callers: [{appID: analyst-agent}]   # exact App ID, or "*"
          grants:
            - capability: tools               # tools | resources | prompts
              names: [add, echo]              # exact names / URIs, or "*"
              requiredScopes: [mcp.tools]     # optional; enforced by the bearer layer

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
class Rule:
    callers: tuple[str, ...]
    grants: tuple[Grant, ...]

    def matches(self, caller_app_id: str) -> bool:
        return WILDCARD in self.callers or caller_app_id in self.callers


@dataclass(frozen=True, slots=True)
class MCPServerAccessPolicy:
    name: str
    server_ref: str
    rules: tuple[Rule, ...] = ()
    api_version: str = API_VERSIONS[0]
    metadata_extra: tuple[tuple[str, Any], ...] = ()  # namespace/labels/annotations, kept as-is

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> MCPServerAccessPolicy:
        return parse_policy(document)

    @classmethod
    def deny_all(cls, name: str) -> MCPServerAccessPolicy:
        return cls(name=name, server_ref=name)


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


def _parse_rule(obj: Any, where: str) -> Rule:
    _keys(obj, ("callers", "grants"), ("callers",), where)
    raw_callers = obj["callers"]
    if not isinstance(raw_callers, list) or not raw_callers:
        raise ResourceInvalid("must be a non-empty list", f"{where}.callers")
    callers = []
    for i, caller in enumerate(raw_callers):
        at = f"{where}.callers[{i}]"
        _keys(caller, ("appID",), ("appID",), at)
        callers.append(_string(caller["appID"], f"{at}.appID"))
    raw_grants = obj.get("grants") or []
    if not isinstance(raw_grants, list):
        raise ResourceInvalid("must be a list", f"{where}.grants")
    grants = tuple(_parse_grant(g, f"{where}.grants[{i}]") for i, g in enumerate(raw_grants))
    return Rule(tuple(dict.fromkeys(callers)), grants)


def parse_policy(document: Mapping[str, Any]) -> MCPServerAccessPolicy:
    """Validate ``document`` and build the policy, or raise ``ResourceInvalid`` with a location."""
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
    return MCPServerAccessPolicy(name, server_ref, rules, document["apiVersion"], extra)


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
        rules.append({"callers": [{"appID": c} for c in rule.callers], "grants": grants})
    return {
        "apiVersion": policy.api_version,
        "kind": KIND,
        "metadata": {"name": policy.name, **dict(policy.metadata_extra)},
        "spec": {"mcpServerRef": policy.server_ref, "rules": rules},
    }


# --- evaluation ---------------------------------------------------------------------------------


def _describe(index: int, rule: Rule, grant: Grant) -> str:
    return (
        f"rules[{index}] callers=[{', '.join(rule.callers)}] "
        f"grants {grant.capability}=[{', '.join(grant.names)}]"
    )


def _first_match(
    policy: MCPServerAccessPolicy, caller_app_id: str, capability: str, name: str
) -> tuple[int, Rule, Grant] | None:
    for index, rule in enumerate(policy.rules):
        if not rule.matches(caller_app_id):
            continue
        for grant in rule.grants:
            if grant.capability == capability and grant.covers(name):
                return index, rule, grant
    return None


def item_word(capability: str) -> str:
    return _ITEM_WORD.get(capability, capability)


def authorize_item(
    policy: MCPServerAccessPolicy, caller_app_id: str, capability: str, name: str
) -> Decision:
    """Allow iff a rule matches the caller and grants ``name`` (or ``*``) for ``capability``."""
    word = item_word(capability)
    match = _first_match(policy, caller_app_id, capability, name)
    if match is None:
        return Decision.deny(
            _LAYER,
            f"{word}_not_granted",
            f"{word} {name!r} is not granted to caller {caller_app_id!r}",
            403,
            rule=f"policy {policy.name}: no rule grants it"
            if policy.rules
            else f"policy {policy.name}: no rules (deny all)",
        )
    index, rule, grant = match
    return Decision.allow(
        _LAYER,
        f"{word}_granted",
        f"{word} {name!r} is granted to caller {caller_app_id!r}",
        rule=_describe(index, rule, grant),
    )


def is_granted(
    policy: MCPServerAccessPolicy, caller_app_id: str, capability: str, name: str
) -> bool:
    return _first_match(policy, caller_app_id, capability, name) is not None


def caller_has_any_grant(policy: MCPServerAccessPolicy, caller_app_id: str) -> bool:
    return any(
        rule.matches(caller_app_id) and any(g.names for g in rule.grants) for rule in policy.rules
    )


def caller_has_capability(
    policy: MCPServerAccessPolicy, caller_app_id: str, capability: str
) -> bool:
    return any(
        rule.matches(caller_app_id)
        and any(g.capability == capability and g.names for g in rule.grants)
        for rule in policy.rules
    )


def required_scopes(
    policy: MCPServerAccessPolicy, caller_app_id: str, capability: str, name: str
) -> tuple[str, ...] | None:
    """Scopes the bearer token must hold for an allowed item; ``None`` when it is not granted."""
    match = _first_match(policy, caller_app_id, capability, name)
    return None if match is None else match[2].required_scopes


# --- transforms for the CLI ---------------------------------------------------------------------


def _normalise_names(names: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(names))
    return (WILDCARD,) if WILDCARD in names else names


def _check_edit(caller: str, capability: str, names: Sequence[str]) -> None:
    _string(caller, "caller")
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
    caller: str,
    capability: Capability,
    names: Sequence[str],
    *,
    required_scopes: Sequence[str] = (),
) -> MCPServerAccessPolicy:
    """Merge ``names`` into the caller's own rule (one whose callers are exactly ``[caller]``)."""
    _check_edit(caller, capability, names)
    scopes = tuple(dict.fromkeys(required_scopes))
    rules = list(policy.rules)
    for index, rule in enumerate(rules):
        if rule.callers != (caller,):
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
    rules.append(Rule((caller,), (Grant(capability, _normalise_names(names), scopes),)))
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


def revoke(
    policy: MCPServerAccessPolicy, caller: str, capability: Capability, names: Sequence[str]
) -> MCPServerAccessPolicy:
    """Remove ``names`` from every rule naming ``caller`` explicitly.

    A shared rule (several callers) is split: the caller leaves it and gets its own rule with what
    is left, so the other callers keep their grants.
    """
    _check_edit(caller, capability, names)
    rules: list[Rule] = []
    for rule in policy.rules:
        if caller not in rule.callers:
            rules.append(rule)
            continue
        remaining = _without(rule.grants, capability, names)
        if rule.callers == (caller,):
            if remaining:
                rules.append(replace(rule, grants=remaining))
            continue
        others = tuple(c for c in rule.callers if c != caller)
        rules.append(replace(rule, callers=others))
        if remaining:
            rules.append(Rule((caller,), remaining))
    return replace(policy, rules=tuple(rules))


def revoke_all(policy: MCPServerAccessPolicy, caller: str) -> MCPServerAccessPolicy:
    """Remove ``caller`` from every rule naming it explicitly (``--all``)."""
    _string(caller, "caller")
    rules = []
    for rule in policy.rules:
        callers = tuple(c for c in rule.callers if c != caller)
        if callers:
            rules.append(rule if callers == rule.callers else replace(rule, callers=callers))
    return replace(policy, rules=tuple(rules))
