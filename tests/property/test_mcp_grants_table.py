"""The per-caller grants table answers exactly what the rule scan answers.

``CallerGrants`` (built once per policy and caller, then looked up) replaced a scan of every
rule on every request. The scan, ``_first_match``, stays as the reference: for any policy (rules
in any order, several rules for one caller, ``*`` callers and ``*`` names, other namespaces)
and any caller and item, the table finds the same rule and grant, so the decision, the rule it
names and the scopes it requires are unchanged.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.mcp.policy import (
    Caller,
    CallerRef,
    Grant,
    MCPServerAccessPolicy,
    Rule,
    _first_match,
    as_caller,
    authorize_item,
    caller_has_any_grant,
    caller_has_capability,
    caller_label,
    grants_for,
    required_scopes,
)

CAPABILITIES = ("tools", "resources", "prompts")
NAMES = ["add", "echo", "*", "add", "*", "Add", "file:///a", "ädd"]  # the first ones often
APPS = ["a", "b", "*"]
NAMESPACES = [None, "default", "dev", "*"]


@st.composite
def policies(draw):
    rules = []
    for _ in range(draw(st.integers(0, 5))):
        callers = draw(
            st.lists(
                st.builds(CallerRef, st.sampled_from(APPS), st.sampled_from(NAMESPACES)),
                min_size=1,
                max_size=2,
            )
        )
        grants = draw(
            st.lists(
                st.builds(
                    Grant,
                    st.sampled_from(CAPABILITIES[:2]),
                    st.lists(st.sampled_from(NAMES), max_size=3).map(tuple),
                    st.lists(st.sampled_from(["s1", "s2"]), max_size=1).map(tuple),
                ),
                max_size=3,
            )
        )
        rules.append(Rule(tuple(callers), tuple(grants)))
    namespace = draw(st.sampled_from(["default", "dev"]))
    return MCPServerAccessPolicy("srv", "srv", tuple(rules), server_namespace=namespace)


CALLERS = st.one_of(
    st.builds(
        Caller, st.sampled_from(["default", "dev", "prod"]), st.sampled_from(["a", "b", "c"])
    ),
    st.sampled_from(["a", "b", "dev/a", "prod/b"]),
)


FIRST_NAMED_THEN_ANY = MCPServerAccessPolicy(
    "srv",
    "srv",
    (Rule((CallerRef("a"),), (Grant("tools", ("add",), ("s1",)), Grant("tools", ("*",)))),),
)


@settings(max_examples=400)
@given(policies(), CALLERS, st.sampled_from(CAPABILITIES), st.sampled_from([*NAMES, "zzz"]))
@example(FIRST_NAMED_THEN_ANY, "a", "tools", "add")
def test_table_finds_the_rule_the_scan_finds(policy, caller, capability, name):
    who = as_caller(caller, policy.server_namespace)
    expected = _first_match(policy, who, capability, name)
    assert grants_for(policy, caller).first_match(capability, name) == expected
    decision = authorize_item(policy, caller, capability, name)
    assert decision.allowed is (expected is not None)
    if expected is not None:
        index = expected[0]
        assert decision.rule.startswith(f"rules[{index}] ")
        assert required_scopes(policy, caller, capability, name) == expected[2].required_scopes
    else:
        assert required_scopes(policy, caller, capability, name) is None
    # asked twice (the cached decision) the answer is the same
    assert authorize_item(policy, caller, capability, name) == decision


@given(policies(), CALLERS, st.sampled_from(CAPABILITIES))
def test_table_summaries_match_the_rules(policy, caller, capability):
    who = as_caller(caller, policy.server_namespace)
    ns = policy.server_namespace
    matching = [r for r in policy.rules if r.matches(who, ns)]
    assert caller_has_any_grant(policy, caller) is any(g.names for r in matching for g in r.grants)
    assert caller_has_capability(policy, caller, capability) is any(
        g.capability == capability and g.names for r in matching for g in r.grants
    )
    assert caller_label(policy, caller) == (who.app_id if who.namespace == ns else str(who))


def test_a_new_policy_object_is_never_answered_from_the_old_ones_table():
    caller = Caller("default", "a")
    granted = MCPServerAccessPolicy(
        "srv", "srv", (Rule((CallerRef("a"),), (Grant("tools", ("add",)),)),)
    )
    assert authorize_item(granted, caller, "tools", "add").allowed
    revoked = MCPServerAccessPolicy("srv", "srv", ())
    assert revoked == MCPServerAccessPolicy("srv", "srv", ())  # equal policies, distinct objects
    assert not authorize_item(revoked, caller, "tools", "add").allowed
    assert authorize_item(granted, caller, "tools", "add").allowed
