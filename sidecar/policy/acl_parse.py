"""Parsing ``spec.accessControl`` into an :class:`~.acl.AccessControl`, refusing what Dapr fumbles.

Reference: dapr/dapr ``pkg/acl/acl.go: ParseAccessControlSpec`` and ``notes/dapr-compat.md`` §1.2.
The defaults reproduced and the refusals added (each with the field's exact location, such as
``spec.accessControl.policies[2].trustDomain``, and the fix) are listed in :mod:`.acl`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from identity import IdentityError, validate_app_id, validate_namespace, validate_trust_domain

from ..errors import ResourceInvalid
from .acl import (
    ACTIONS,
    ALLOW,
    ANY_VERB,
    DEFAULT_TRUST_DOMAIN,
    DENY,
    HTTP_VERBS,
    AccessControl,
    AclOperation,
    AppPolicy,
    match_form,
)
from .acl_fields import check_keys, optional_list, optional_str, required_str
from .acl_trie import SINGLE_SEGMENT_WILDCARD

LOCATION = "spec.accessControl"
ACCESS_CONTROL_FIELDS = ("defaultAction", "trustDomain", "policies")
POLICY_FIELDS = ("appId", "defaultAction", "trustDomain", "namespace", "operations")
OPERATION_FIELDS = ("name", "httpVerb", "action")


def parse_access_control(spec: Mapping[str, Any] | None) -> AccessControl | None:
    """Parse ``spec.accessControl`` (or a whole Configuration document holding one).

    Returns None, meaning "no ACL, allow everything", exactly when Dapr's parser returns nil.
    Raises :class:`ResourceInvalid` naming the offending field (``spec.accessControl.…``).
    """
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ResourceInvalid(f"must be a mapping, not {type(spec).__name__}", LOCATION)
    if "spec" in spec or "kind" in spec or "apiVersion" in spec:
        inner = spec.get("spec")
        if inner is None:
            return None
        if not isinstance(inner, Mapping):
            raise ResourceInvalid(f"must be a mapping, not {type(inner).__name__}", "spec")
        spec = inner.get("accessControl")
        if spec is None:
            return None
        if not isinstance(spec, Mapping):
            raise ResourceInvalid(f"must be a mapping, not {type(spec).__name__}", LOCATION)
    return _parse_block(spec)


def _parse_block(block: Mapping[str, Any]) -> AccessControl | None:
    check_keys(block, ACCESS_CONTROL_FIELDS, LOCATION)
    default_action = _action(block, "defaultAction", LOCATION, required=False)
    trust_domain = optional_str(block, "trustDomain", LOCATION)
    raw_policies = optional_list(block, "policies", LOCATION)
    if not trust_domain and default_action is None and not raw_policies:
        return None  # Dapr: nil ACL
    if trust_domain:
        _check_identity_part(validate_trust_domain, trust_domain, f"{LOCATION}.trustDomain")
    if default_action is None:
        # Dapr: deny when policies is absent or non-empty; allow only for an explicit empty list.
        default_action = ALLOW if raw_policies is not None and not raw_policies else DENY

    policies: list[AppPolicy] = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_policies or ()):
        where = f"{LOCATION}.policies[{index}]"
        policy = _parse_policy(raw, where, trust_domain or DEFAULT_TRUST_DOMAIN)
        key = (policy.app_id, policy.namespace)
        if key in seen:
            raise ResourceInvalid(
                f"policies[{seen[key]}] and policies[{index}] both apply to appId "
                f"{policy.app_id!r} in namespace {policy.namespace!r}; Dapr would silently use "
                "only the later one, so merge them into one policy",
                where,
            )
        seen[key] = index
        policies.append(policy)
    return AccessControl(default_action, trust_domain or DEFAULT_TRUST_DOMAIN, tuple(policies))


def _parse_policy(raw: object, where: str, suggested_trust_domain: str) -> AppPolicy:
    if not isinstance(raw, Mapping):
        raise ResourceInvalid(f"a policy must be a mapping, not {type(raw).__name__}", where)
    check_keys(raw, POLICY_FIELDS, where)
    app_id = required_str(
        raw, "appId", where, "missing appId: every policy names the caller App ID it applies to"
    )
    _check_identity_part(validate_app_id, app_id, f"{where}.appId")
    trust_domain = required_str(
        raw,
        "trustDomain",
        where,
        f"missing trustDomain for appId {app_id!r}: Dapr requires every policy to name its "
        "caller's trust domain and does not take it from the top-level trustDomain; add "
        f'`trustDomain: "{suggested_trust_domain}"` to this policy',
    )
    _check_identity_part(validate_trust_domain, trust_domain, f"{where}.trustDomain")
    namespace = required_str(
        raw,
        "namespace",
        where,
        f"missing namespace for appId {app_id!r}: Dapr requires every policy to name its "
        'caller\'s namespace; add `namespace: "default"` to this policy',
    )
    _check_identity_part(validate_namespace, namespace, f"{where}.namespace")
    default_action = _action(raw, "defaultAction", where, required=False)
    operations = _parse_operations(raw, where)
    return AppPolicy(app_id, namespace, trust_domain, default_action, operations)


def _parse_operations(policy: Mapping[str, Any], where: str) -> tuple[AclOperation, ...]:
    operations: list[AclOperation] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(optional_list(policy, "operations", where) or ()):
        at = f"{where}.operations[{index}]"
        if not isinstance(raw, Mapping):
            raise ResourceInvalid(f"an operation must be a mapping, not {type(raw).__name__}", at)
        check_keys(raw, OPERATION_FIELDS, at)
        name = normalise_operation_name(
            required_str(raw, "name", at, "missing name: an operation needs a name such as /mcp"),
            f"{at}.name",
        )
        if name in seen:
            raise ResourceInvalid(
                f"operations[{seen[name]}] and operations[{index}] both name {name!r} (after "
                "adding '/' and lower-casing); Dapr would silently use only the first one, so "
                "merge them",
                f"{at}.name",
            )
        seen[name] = index
        verbs = _parse_verbs(raw, at)
        action = _action(raw, "action", at, required=True)
        assert action is not None
        operations.append(AclOperation(name, verbs, action))
    return tuple(operations)


def normalise_operation_name(name: str, location: str) -> str:
    """``/``-prefix and lower-case a rule's operation name; refuse names that can never match."""
    if not name.startswith("/"):
        name = "/" + name
    name = match_form(name)
    if name == "/":
        return name  # matches the empty method
    segments = name.split("/")[1:]
    for position, segment in enumerate(segments):
        if segment in ("", ".", ".."):
            raise ResourceInvalid(
                f"operation name {name!r} has an empty, '.' or '..' segment; request paths are "
                "normalised before the ACL, so this name could never match",
                location,
            )
        if segment == SINGLE_SEGMENT_WILDCARD and position < len(segments) - 1:
            raise ResourceInvalid(
                f"operation name {name!r} has '*' as a whole segment before the end; Dapr never "
                "matches that against a real segment (use '**' for exactly one segment there)",
                location,
            )
    return name


def _parse_verbs(operation: Mapping[str, Any], at: str) -> tuple[str, ...]:
    raw = optional_list(operation, "httpVerb", at)
    verbs: list[str] = []
    for index, verb in enumerate(raw or ()):
        where = f"{at}.httpVerb[{index}]"
        if not isinstance(verb, str):
            raise ResourceInvalid(f"a verb must be a string, not {type(verb).__name__}", where)
        if verb not in HTTP_VERBS and verb != ANY_VERB:
            if verb.upper() in HTTP_VERBS:
                raise ResourceInvalid(
                    f"httpVerb {verb!r} would never match: Dapr compares verbs case-sensitively "
                    f"with upper-case names; write {verb.upper()!r}",
                    where,
                )
            raise ResourceInvalid(
                f"unknown httpVerb {verb!r}; expected one of {', '.join(HTTP_VERBS)} or '*'",
                where,
            )
        if verb not in verbs:
            verbs.append(verb)
    return tuple(verbs)


def _action(mapping: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    """``allow``/``deny`` in any case, lower-cased; an empty ``defaultAction`` means unset."""
    value = optional_str(mapping, key, where)
    if not value:
        if required:
            raise ResourceInvalid(f"missing {key}: write 'allow' or 'deny'", f"{where}.{key}")
        return None
    lowered = value.lower()
    if lowered not in ACTIONS:
        raise ResourceInvalid(
            f"{key} must be 'allow' or 'deny', not {value!r} (Dapr would silently treat it as "
            "deny)",
            f"{where}.{key}",
        )
    return lowered


def _check_identity_part(validate: Any, value: str, location: str) -> None:
    try:
        validate(value)
    except IdentityError as exc:
        raise ResourceInvalid(
            f"{exc}; no caller's SPIFFE ID can carry {value!r}, so this could never match",
            location,
        ) from exc
