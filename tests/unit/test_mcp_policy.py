"""MCPServerAccessPolicy: parsing with locations, evaluation, and the CLI transforms."""

from __future__ import annotations

import copy

import pytest

from sidecar.errors import ResourceInvalid
from sidecar.mcp import (
    CallerRef,
    MCPServerAccessPolicy,
    authorize_item,
    caller_has_any_grant,
    grant,
    parse_policy,
    required_scopes,
    revoke,
    revoke_all,
    to_document,
)
from tests._support.mcp_policies import DOC, POLICY

HOSTED = {
    "apiVersion": "cra.diagrid.io/v1beta1",
    "kind": "MCPServerAccessPolicy",
    "metadata": {"name": "mcp-server"},
    "spec": {
        "mcpServerRef": "mcp-server",
        "rules": [
            {
                "callers": [{"appID": "analyst-agent"}],
                "grants": [{"capability": "tools", "names": ["add", "echo"]}],
            }
        ],
    },
}


def with_(path, value):
    doc = copy.deepcopy(DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def test_hosted_document_parses_and_round_trips():
    policy = parse_policy(HOSTED)
    assert to_document(policy) == HOSTED
    assert parse_policy(to_document(POLICY)) == POLICY


def test_empty_rules_deny_everything():
    policy = parse_policy({**HOSTED, "spec": {"mcpServerRef": "mcp-server"}})
    assert policy.rules == ()
    decision = authorize_item(policy, "analyst-agent", "tools", "add")
    assert not decision.allowed
    assert decision.rule == "policy mcp-server: no rules (deny all)"
    assert not caller_has_any_grant(policy, "analyst-agent")


@pytest.mark.parametrize(
    ("doc", "location", "reason"),
    [
        (with_(["apiVersion"], "v1"), "apiVersion", "is not one of"),
        (with_(["kind"], "Configuration"), "kind", "is not MCPServerAccessPolicy"),
        (with_(["spec", "extra"], 1), "spec.extra", "unknown field 'extra'"),
        (with_(["spec", "rules", 0, "grants", 1, "capability"], "tasks"),
         "spec.rules[0].grants[1].capability", "'tasks' is not one of tools, resources, prompts"),
        (with_(["spec", "rules", 0, "grants", 0, "names"], "add"),
         "spec.rules[0].grants[0].names", "must be a list"),
        (with_(["spec", "rules", 0, "grants", 0, "names"], ["add", 3]),
         "spec.rules[0].grants[0].names[1]", "must be a non-empty string"),
        (with_(["spec", "rules", 0, "grants", 0, "names"], [" add"]),
         "spec.rules[0].grants[0].names[0]", "leading or trailing whitespace"),
        (with_(["spec", "rules", 0, "callers"], []), "spec.rules[0].callers", "non-empty list"),
        (with_(["spec", "rules", 0, "callers", 0], {"appId": "x"}),
         "spec.rules[0].callers[0].appId", "unknown field 'appId'"),
        (with_(["spec", "rules", 0, "grants", 2, "requiredScopes"], ["a b"]),
         "spec.rules[0].grants[2].requiredScopes[0]", "is not an OAuth scope token"),
        (with_(["metadata"], {}), "metadata.name", "is required"),
    ],
)  # fmt: skip
def test_invalid_documents_name_the_location(doc, location, reason):
    with pytest.raises(ResourceInvalid) as info:
        parse_policy(doc)
    assert info.value.location == location
    assert reason in info.value.reason


@pytest.mark.parametrize(
    ("caller", "capability", "name", "allowed"),
    [
        ("analyst-agent", "tools", "add", True),
        ("analyst-agent", "tools", "Add", False),  # no case folding
        ("analyst-agent", "tools", "add ", False),  # no trimming
        ("analyst-agent", "tools", "ａｄｄ", False),  # no NFKC normalisation
        ("analyst-agent", "resources", "file:///ok.txt", True),
        ("analyst-agent", "prompts", "review", True),
        ("analyst-agent", "prompts", "add", False),  # grants are per capability
        ("reader", "resources", "file:///ok.txt", True),
        ("reader", "tools", "add", False),
        ("Analyst-Agent", "tools", "add", False),  # App IDs are case-sensitive
    ],
)
def test_authorize_item_table(caller, capability, name, allowed):
    assert authorize_item(POLICY, caller, capability, name).allowed is allowed


def test_decision_names_rule_caller_and_item():
    allow = authorize_item(HOSTED_POLICY, "analyst-agent", "tools", "add")
    assert allow.rule == "rules[0] callers=[analyst-agent] grants tools=[add, echo]"
    deny = authorize_item(HOSTED_POLICY, "analyst-agent", "tools", "rm")
    assert (deny.status, deny.reason, deny.layer) == (403, "tool_not_granted", "mcp")
    assert deny.message == "tool 'rm' is not granted to caller 'analyst-agent'"


HOSTED_POLICY = parse_policy(HOSTED)


def test_wildcards():
    policy = grant(MCPServerAccessPolicy.deny_all("s"), "*", "tools", ["*"])
    assert authorize_item(policy, "anyone", "tools", "anything").allowed
    assert not authorize_item(policy, "anyone", "prompts", "anything").allowed


def test_required_scopes_of_the_deciding_grant():
    assert required_scopes(POLICY, "analyst-agent", "prompts", "review") == ("p.read",)
    assert required_scopes(POLICY, "analyst-agent", "tools", "add") == ()
    assert required_scopes(POLICY, "analyst-agent", "tools", "rm") is None


def test_grant_merges_into_the_callers_rule_and_star_absorbs():
    policy = grant(HOSTED_POLICY, "analyst-agent", "tools", ["echo", "sum"])
    assert to_document(policy)["spec"]["rules"][0]["grants"] == [
        {"capability": "tools", "names": ["add", "echo", "sum"]}
    ]
    policy = grant(policy, "analyst-agent", "tools", ["*"])
    assert policy.rules[0].grants[0].names == ("*",)
    policy = grant(policy, "analyst-agent", "tools", ["more"])
    assert policy.rules[0].grants[0].names == ("*",)
    policy = grant(policy, "new-agent", "prompts", ["p"])
    assert policy.rules[-1].callers == (CallerRef("new-agent"),)


def test_grant_is_pure():
    before = to_document(HOSTED_POLICY)
    grant(HOSTED_POLICY, "analyst-agent", "tools", ["x"])
    assert to_document(HOSTED_POLICY) == before


def test_revoke_names_then_all():
    policy = revoke(HOSTED_POLICY, "analyst-agent", "tools", ["echo"])
    assert authorize_item(policy, "analyst-agent", "tools", "add").allowed
    assert not authorize_item(policy, "analyst-agent", "tools", "echo").allowed
    policy = revoke(policy, "analyst-agent", "tools", ["add"])
    assert policy.rules == ()  # the empty rule is dropped
    policy = revoke_all(HOSTED_POLICY, "analyst-agent")
    assert policy.rules == ()


def test_revoke_splits_a_shared_rule():
    policy = parse_policy(with_(["spec", "rules", 0, "callers"], [{"appID": "a"}, {"appID": "b"}]))
    policy = revoke(policy, "a", "tools", ["add"])
    assert authorize_item(policy, "b", "tools", "add").allowed
    assert not authorize_item(policy, "a", "tools", "add").allowed
    assert authorize_item(policy, "a", "tools", "echo").allowed


def test_revoke_from_star_is_refused():
    policy = grant(MCPServerAccessPolicy.deny_all("s"), "a", "tools", ["*"])
    with pytest.raises(ResourceInvalid, match="cannot revoke"):
        revoke(policy, "a", "tools", ["x"])
    assert revoke(policy, "a", "tools", ["*"]).rules == ()
