"""Properties of the ACL that must hold for every policy, not just the ones in the tables."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from identity import AppIdentity
from sidecar.policy.acl import HTTP_VERBS, evaluate_acl
from sidecar.policy.acl_parse import parse_access_control
from sidecar.policy.acl_trie import OperationTrie

FAST = settings(max_examples=100, deadline=None)
ANY_ACTION = st.sampled_from(("allow", "deny", "ALLOW", "Deny"))

APP_IDS = ("a", "b", "c", "mcp-client")
NAMESPACES = ("default", "ns2")
TRUST_DOMAINS = ("public", "corp")
NAME_SEGMENTS = ("a", "b", "ab", "x", "a*", "*b", "**", "*")
REQUEST_SEGMENTS = ("a", "b", "ab", "ba", "x", "*", "", "A", "Ab")

identities = st.builds(
    AppIdentity, st.sampled_from(TRUST_DOMAINS), st.sampled_from(NAMESPACES),
    st.sampled_from(APP_IDS),
)  # fmt: skip
callers = st.none() | identities
verbs = st.sampled_from((*HTTP_VERBS, "get", "PROPFIND", "NONE", ""))


@st.composite
def operation_names(draw):
    segments = draw(st.lists(st.sampled_from(NAME_SEGMENTS), min_size=1, max_size=3))
    # '*' as a whole segment is refused before the end; keep it only last.
    segments = [s for s in segments[:-1] if s != "*"] + segments[-1:]
    return "/" + "/".join(segments)


requests = st.lists(st.sampled_from(REQUEST_SEGMENTS), min_size=1, max_size=4).map("/".join)


@st.composite
def operations(draw, actions=ANY_ACTION):
    op = {"name": draw(operation_names()), "action": draw(actions)}
    listed = draw(st.none() | st.lists(st.sampled_from((*HTTP_VERBS, "*")), max_size=3))
    if listed is not None:
        op["httpVerb"] = listed
    return op


def _unique_by_name(ops):
    seen, out = set(), []
    for op in ops:
        key = op["name"].lower()
        if key not in seen:
            seen.add(key)
            out.append(op)
    return out


@st.composite
def policies(draw, app_ids=APP_IDS, actions=ANY_ACTION):
    policy = {
        "appId": draw(st.sampled_from(app_ids)),
        "trustDomain": draw(st.sampled_from(TRUST_DOMAINS)),
        "namespace": draw(st.sampled_from(NAMESPACES)),
    }
    default = draw(st.none() | actions)
    if default is not None:
        policy["defaultAction"] = default
    ops = draw(st.lists(operations(actions), max_size=4))
    if ops:
        policy["operations"] = _unique_by_name(ops)
    return policy


def _unique_by_caller(items):
    seen, out = set(), []
    for p in items:
        key = (p["appId"], p["namespace"])
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


@st.composite
def specs(draw, app_ids=APP_IDS, actions=ANY_ACTION):
    spec = {"policies": _unique_by_caller(draw(st.lists(policies(app_ids, actions), max_size=4)))}
    default = draw(st.none() | actions)
    if default is not None:
        spec["defaultAction"] = default
    if draw(st.booleans()):
        spec["trustDomain"] = "public"
    return spec


# (a) --------------------------------------------------------------------------------------------


@FAST
@given(specs(actions=st.sampled_from(("deny", "DENY"))), callers, requests, verbs)
def test_deny_all_acl_never_allows(spec, caller, operation, verb):
    spec["defaultAction"] = "deny"
    assert not evaluate_acl(parse_access_control(spec), caller, operation, verb).allowed


# (b) --------------------------------------------------------------------------------------------


@FAST
@given(specs(app_ids=("a", "b")), st.sampled_from(("c", "mcp-client")), requests, verbs)
def test_caller_without_policy_gets_the_global_default(spec, app_id, operation, verb):
    acl = parse_access_control(spec)
    decision = evaluate_acl(acl, AppIdentity("public", "default", app_id), operation, verb)
    expected = acl is None or acl.default_action == "allow"
    assert decision.allowed is expected
    if acl is not None:
        assert decision.rule == f"global defaultAction={acl.default_action}"


# (c) --------------------------------------------------------------------------------------------


@FAST
@given(specs(), policies(), identities, requests, verbs)
def test_a_policy_for_x_never_changes_decisions_for_y(spec, extra, other, operation, verb):
    if any((p["appId"], p["namespace"]) == (extra["appId"], extra["namespace"])
           for p in spec["policies"]):  # fmt: skip
        spec["policies"] = [
            p for p in spec["policies"]
            if (p["appId"], p["namespace"]) != (extra["appId"], extra["namespace"])
        ]  # fmt: skip
    if (other.app_id, other.namespace) == (extra["appId"], extra["namespace"]):
        return
    spec.setdefault("defaultAction", "deny")  # adding a policy may not flip an empty default
    before = parse_access_control(spec)
    after = parse_access_control({**spec, "policies": [*spec["policies"], extra]})
    assert evaluate_acl(before, other, operation, verb) == evaluate_acl(
        after, other, operation, verb
    )


# (d) --------------------------------------------------------------------------------------------


@FAST
@given(specs(), callers, requests, verbs)
def test_letter_case_of_the_request_path_never_matters(spec, caller, operation, verb):
    acl = parse_access_control(spec)
    decisions = {
        (d.allowed, d.rule)
        for d in (evaluate_acl(acl, caller, op, verb)
                  for op in (operation, operation.upper(), operation.lower(), operation.swapcase()))
    }  # fmt: skip
    assert len(decisions) == 1


# (e) --------------------------------------------------------------------------------------------


def _glob_fits(pattern: str, segment: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, segment, re.DOTALL) is not None


def _children(names, prefix):
    """Next segments after ``prefix`` among ``names``, in order of first appearance."""
    seen = []
    for name in names:
        segments = tuple(name.split("/")[1:])
        fits = len(segments) > len(prefix) and segments[: len(prefix)] == prefix
        if fits and segments[len(prefix)] not in seen:
            seen.append(segments[len(prefix)])
    return seen


def _data(names, prefix):
    """The index of the first name that ends exactly at ``prefix`` (first inserted wins)."""
    return next((i for i, n in enumerate(names) if tuple(n.split("/")[1:]) == prefix), None)


def _first_fitting(candidates, segment, is_last):
    for candidate in candidates:
        if candidate == segment:
            return candidate
        if candidate == "*":
            if is_last:
                return candidate
            continue
        if candidate == "**" or ("*" in candidate and _glob_fits(candidate, segment)):
            return candidate
    return None


def reference_search(names, request):
    """The note's §1.6 rules, computed from the list of names with no trie at all."""
    segments = request.split("/")[1:]
    prefix: tuple[str, ...] = ()
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        chosen = _first_fitting(_children(names, prefix), segment, is_last)
        if chosen is None:
            return None
        prefix = (*prefix, chosen)
        found = _data(names, prefix)
        if found is not None:
            if not is_last and chosen == "*":
                continue
            return found
        if is_last:
            wildcard = _first_fitting(_children(names, prefix), "*", True)
            if wildcard is not None:
                return _data(names, (*prefix, wildcard))
    return None


raw_names = st.lists(st.sampled_from(NAME_SEGMENTS), min_size=1, max_size=3).map(
    lambda s: "/" + "/".join(s)
)


@settings(max_examples=500, deadline=None)
@given(st.lists(raw_names, min_size=1, max_size=6), requests)
def test_trie_agrees_with_a_naive_reference(names, request):
    request = "/" + request
    trie = OperationTrie.build((name, index) for index, name in enumerate(names))
    assert trie.search(request) == reference_search(names, request)


# (f) --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(specs(), callers, st.text(), st.text())
def test_evaluation_never_raises(spec, caller, operation, verb):
    decision = evaluate_acl(parse_access_control(spec), caller, operation, verb)
    assert decision.layer == "acl"
    assert decision.allowed or decision.status == 403
