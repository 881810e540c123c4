"""Dapr's ACL decisions, case by case.

Cases are transcribed from ``notes/dapr-compat.md`` §1.5-§1.8 and from dapr/dapr
``pkg/acl/acl_test.go`` and ``pkg/config/acl_trie_test.go`` (HTTP callee; Dapr's gRPC-only cases
are checked against the trie directly, which is what they exercise).
"""

from __future__ import annotations

import pytest

from identity import AppIdentity
from sidecar.policy.acl import AccessControl, AppPolicy, dapr_verb, evaluate_acl
from sidecar.policy.acl_parse import parse_access_control
from sidecar.policy.acl_trie import OperationTrie, glob_match


def caller(app: str, namespace: str = "default", trust_domain: str = "public") -> AppIdentity:
    return AppIdentity(trust_domain, namespace, app)


def trie_of(*names: str) -> OperationTrie[str]:
    return OperationTrie.build((name, name) for name in names)


# --- §1.6: operation matching ---------------------------------------------------------------

TRIE_TABLE = [
    # (names in insertion order, request, the name whose rule decides or None)
    (["/op1"], "/op1", "/op1"),
    (["/op1"], "/op1/a", "/op1"),
    (["/op1"], "/op1/a/b", "/op1"),
    (["/op1"], "/op10", None),
    (["/op1"], "/op", None),
    (["/op1/*"], "/op1", "/op1/*"),
    (["/op1/*"], "/op1/a", "/op1/*"),
    (["/op1/*"], "/op1/a/b", None),
    (["/op1/**"], "/op1", "/op1/**"),
    (["/op1/**"], "/op1/a", "/op1/**"),
    (["/op1/**"], "/op1/a/b", "/op1/**"),
    (["/op1/**/a"], "/op1/x/a", "/op1/**/a"),
    (["/op1/**/a"], "/op1/x/y/a", None),
    (["/op1/**/a"], "/op1/a", None),
    (["/op1/*/a"], "/op1/x/a", None),  # '*' in the middle never matches a real segment
    (["/op1/*/a"], "/op1/*/a", "/op1/*/a"),  # ...only a literal '*'
    (["/a*"], "/abc", "/a*"),
    (["/a*"], "/abc/d", "/a*"),
    (["/a/b*c"], "/a/bxc", "/a/b*c"),
    (["/a/b*c"], "/a/bxc/d", "/a/b*c"),
    (["/*"], "/x", "/*"),
    (["/*"], "/", "/*"),  # the empty method
    (["/*"], "/x/y", None),
    (["/**"], "/x/y/z", "/**"),
    # request-side '*' is an ordinary character (Dapr: "asterisk in path does not match")
    (["/admin/stream"], "/admin*stream", None),
    (["/abc"], "/a*c", None),
    # precedence quirks: first-inserted sibling, shallowest data
    (["/**", "/admin"], "/admin", "/**"),
    (["/admin", "/**"], "/admin", "/admin"),
    (["/a", "/a/b"], "/a/b", "/a"),
    (["/a/b", "/a"], "/a/b", "/a"),
    (["/a/*", "/a/b"], "/a/b", "/a/*"),
    (["/a/b", "/a/*"], "/a/b", "/a/b"),
    (["/a", "/a"], "/a", "/a"),
    # acl_test.go, app4 (checked there through gRPC, here on the trie itself)
    (["/op6", "/op7/a/b/*", "/op7/a/b/c/f", "/op7/a/b*", "/op7/c/**"], "/op7/a/b/c", "/op7/a/b/*"),
    (["/op6", "/op7/a/b/*", "/op7/a/b/c/f", "/op7/a/b*", "/op7/c/**"], "/op7/a/b/c/d", None),
    (
        ["/op6", "/op7/a/b/*", "/op7/a/b/c/f", "/op7/a/b*", "/op7/c/**"],
        "/op7/a/b/c/f",
        "/op7/a/b/c/f",
    ),
    (["/op6", "/op7/a/b/*", "/op7/a/b/c/f", "/op7/a/b*", "/op7/c/**"], "/op7/a/bc", "/op7/a/b*"),
    (["/op6", "/op7/a/b/*", "/op7/a/b/c/f", "/op7/a/b*", "/op7/c/**"], "/op7/c/d/e", "/op7/c/**"),
]


@pytest.mark.parametrize(("names", "request_op", "expected"), TRIE_TABLE)
def test_trie_matches_like_dapr(names, request_op, expected):
    assert trie_of(*names).search(request_op) == expected


@pytest.mark.parametrize(
    ("text", "pattern", "expected"),
    [
        # acl_trie_test.go TestWildcardMatch
        ("ABC", "A*", True),
        ("ABC.a", "A*", True),
        ("ABC", "*C", True),
        ("ABC.a", "*a", True),
        ("abcd", "a*d", True),
        ("ABC.a", "AB*.a", True),
        ("abc", "a*b", False),
        ("ab", "a*b*", True),
        ("aXbYb", "a*b*b", True),
        ("ab", "a*b*b", False),
    ],
)
def test_glob_within_a_segment(text, pattern, expected):
    assert glob_match(tuple(pattern.split("*")), text) is expected


# --- acl_test.go: the five-policy ACL ---------------------------------------------------------

DAPR_TEST_SPEC = {
    "defaultAction": "deny",
    "trustDomain": "abcd",
    "policies": [
        {
            "appId": "app1",
            "defaultAction": "allow",
            "trustDomain": "public",
            "namespace": "ns1",
            "operations": [
                {"name": "/op1", "httpVerb": ["POST", "GET"], "action": "allow"},
                {"name": "/op2", "httpVerb": ["*"], "action": "deny"},
            ],
        },
        {
            "appId": "app2",
            "defaultAction": "deny",
            "trustDomain": "domain1",
            "namespace": "ns2",
            "operations": [
                {"name": "/op3/a/*", "httpVerb": ["PUT", "GET"], "action": "allow"},
                {"name": "/op4", "httpVerb": ["POST"], "action": "allow"},
            ],
        },
        {
            "appId": "app3",
            "trustDomain": "domain1",
            "namespace": "ns1",
            "operations": [{"name": "/op5", "httpVerb": ["POST"], "action": "allow"}],
        },
        {
            "appId": "app4",
            "defaultAction": "deny",
            "trustDomain": "domain1",
            "namespace": "ns2",
            "operations": [
                {"name": "/op6", "action": "allow"},
                {"name": "/op7/a/b/*", "action": "allow"},
                {"name": "/op7/a/b/c/f", "action": "allow"},
                {"name": "/op7/a/b*", "action": "allow"},
                {"name": "/op7/c/**", "action": "allow"},
            ],
        },
        {
            "appId": "app1",
            "defaultAction": "allow",
            "trustDomain": "public",
            "namespace": "ns4",
            "operations": [{"name": "/op6", "httpVerb": ["*"], "action": "allow"}],
        },
    ],
}

APP1 = caller("app1", "ns1", "public")
APP2 = caller("app2", "ns2", "domain1")
APP3 = caller("app3", "ns1", "domain1")
APP4 = caller("app4", "ns2", "domain1")

DAPR_CASES = [
    # (test name in acl_test.go, caller, operation, verb, allowed, rule)
    ("no matching app", caller("appX", "ns1"), "op1", "POST", False, "global defaultAction=deny"),
    ("trust domain does not match", caller("app1", "ns1", "private"), "op1", "POST", False,
     "global defaultAction=deny (policies[app1] is for trust domain public)"),
    ("namespace does not match", caller("app1", "abcd"), "op1", "POST", False,
     "global defaultAction=deny"),
    ("spiffe id is nil", None, "op1", "POST", False,
     "global defaultAction=deny (caller has no SPIFFE identity)"),
    ("operation not found", APP1, "opX", "POST", True, "policies[app1] defaultAction=allow"),
    ("http case-insensitive operation", APP1, "Op2", "POST", False,
     "policies[app1] operations[/op2] *=deny"),
    ("http verb not found", APP2, "op4", "PUT", False,
     "policies[app2] defaultAction=deny (operations[/op4] has no rule for this verb)"),
    ("no app default, no verb match", APP3, "op5", "PUT", False,
     "global defaultAction=deny (policies[app3] operations[/op5] has no rule for this verb and "
     "policies[app3] sets no defaultAction)"),
    ("http verb matches *", APP1, "op2", "PUT", False, "policies[app1] operations[/op2] *=deny"),
    ("http verb matches a specific verb", APP2, "op4", "POST", True,
     "policies[app2] operations[/op4] POST=allow"),
    ("operation invoked with /", APP2, "/op4", "POST", True,
     "policies[app2] operations[/op4] POST=allow"),
    ("http verb not specified", APP2, "op4", "NONE", False,
     "policies[app2] defaultAction=deny (policies[app2] operations[/op4] matched a request "
     "without a verb)"),
    ("post fix matches", APP2, "/op3/a", "PUT", True,
     "policies[app2] operations[/op3/a/*] PUT=allow"),
    ("non-matching post fix", APP2, "/op3/b/b", "PUT", False, "policies[app2] defaultAction=deny"),
    ("two levels under /*", APP2, "/op3/a/b", "PUT", True,
     "policies[app2] operations[/op3/a/*] PUT=allow"),
    ("same app id, other namespace", caller("app1", "ns4"), "op6", "DELETE", True,
     "policies[app1] operations[/op6] *=allow"),
    ("operations without httpVerb are ignored for HTTP", APP4, "op6", "GET", False,
     "policies[app4] defaultAction=deny (operations[/op6] has no rule for this verb)"),
    ("app3 allowed verb", APP3, "op5", "POST", True, "policies[app3] operations[/op5] POST=allow"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("caller_id", "operation", "verb", "allowed", "rule"),
    [case[1:] for case in DAPR_CASES],
    ids=[case[0] for case in DAPR_CASES],
)
def test_dapr_acl_test_cases(caller_id, operation, verb, allowed, rule):
    decision = evaluate_acl(parse_access_control(DAPR_TEST_SPEC), caller_id, operation, verb)
    assert (decision.allowed, decision.rule) == (allowed, rule)


def test_parse_translates_to_in_memory_rules():
    acl = parse_access_control(DAPR_TEST_SPEC)
    assert acl is not None
    assert (acl.default_action, acl.trust_domain) == ("deny", "abcd")
    app1 = acl.policies[0]
    assert (app1.app_id, app1.default_action, app1.trust_domain, app1.namespace) == (
        "app1", "allow", "public", "ns1",
    )  # fmt: skip
    assert [(op.name, op.http_verbs, op.action) for op in app1.operations] == [
        ("/op1", ("POST", "GET"), "allow"),
        ("/op2", ("*",), "deny"),
    ]
    assert acl.policies[2].default_action is None


# --- nil, empty and missing ---------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [None, {}, {"policies": []}, {"policies": None}, {"defaultAction": "", "trustDomain": ""}],
)
def test_no_acl_means_allow_everything(spec):
    assert parse_access_control(spec) is None
    decision = evaluate_acl(None, caller("anyone"), "admin", "DELETE")
    assert decision.allowed
    assert decision.rule == "no access control configured"
    assert (decision.layer, decision.reason) == ("acl", "acl_allowed")


@pytest.mark.parametrize(
    ("spec", "default_action"),
    [
        ({"trustDomain": "public"}, "deny"),  # quirk: trust domain alone denies everything
        ({"trustDomain": "public", "policies": []}, "allow"),  # present but empty: allow
        ({"defaultAction": "ALLOW"}, "allow"),  # lower-cased
        ({"defaultAction": "Deny", "policies": []}, "deny"),
        (
            {
                "trustDomain": "public",
                "policies": [
                    {"appId": "a", "defaultAction": "allow", "trustDomain": "public",
                     "namespace": "default"}
                ],
            },
            "deny",
        ),  # non-empty policies without a global default: deny
    ],
)  # fmt: skip
def test_global_default_as_dapr_resolves_it(spec, default_action):
    acl = parse_access_control(spec)
    assert acl is not None
    assert acl.default_action == default_action
    decision = evaluate_acl(acl, caller("stranger"), "mcp", "POST")
    assert decision.allowed is (default_action == "allow")
    assert decision.rule == f"global defaultAction={default_action}"


def test_global_trust_domain_defaults_to_public():
    assert parse_access_control({"defaultAction": "deny"}).trust_domain == "public"


def test_whole_document_is_accepted_in_place_of_the_block():
    doc = {"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "spec": {}}
    assert parse_access_control(doc) is None
    doc["spec"] = {"accessControl": {"defaultAction": "deny"}}
    assert parse_access_control(doc).default_action == "deny"


# --- operations without verbs and the NONE verb -------------------------------------------------


def _one_policy(global_action, app_action, operation):
    spec = {
        "defaultAction": global_action,
        "policies": [
            {"appId": "c", "trustDomain": "public", "namespace": "default",
             "operations": [operation]}
        ],
    }  # fmt: skip
    if app_action:
        spec["policies"][0]["defaultAction"] = app_action
    return parse_access_control(spec)


def test_app_default_empty_and_operation_without_verbs_uses_global_default():
    acl = _one_policy("deny", None, {"name": "/x", "action": "allow"})
    decision = evaluate_acl(acl, caller("c"), "x", "GET")
    assert not decision.allowed
    assert decision.rule == (
        "global defaultAction=deny (policies[c] operations[/x] has no rule for this verb and "
        "policies[c] sets no defaultAction)"
    )


def test_deny_operation_without_verbs_does_not_deny_like_dapr():
    acl = _one_policy("allow", None, {"name": "/x", "action": "deny"})
    assert evaluate_acl(acl, caller("c"), "x", "DELETE").allowed


def test_verb_none_with_app_default_unset_denies_even_under_global_allow():
    acl = _one_policy("allow", None, {"name": "/x", "httpVerb": ["*"], "action": "allow"})
    decision = evaluate_acl(acl, caller("c"), "x", "NONE")
    assert not decision.allowed
    assert decision.rule.startswith("policies[c] defaultAction unset=deny")
    assert evaluate_acl(acl, caller("c"), "y", "NONE").allowed  # no operation matched


@pytest.mark.parametrize(
    ("method", "verb"),
    [("GET", "GET"), ("get", "GET"), ("Patch", "PATCH"), ("PROPFIND", "POST"), ("", "POST"),
     ("none", "NONE"), ("poſt", "POST")],
)  # fmt: skip
def test_request_verb_is_what_dapr_caller_sidecar_sends(method, verb):
    assert dapr_verb(method) == verb


def test_unknown_method_is_judged_as_post():
    acl = _one_policy("allow", "allow", {"name": "/x", "httpVerb": ["POST"], "action": "deny"})
    decision = evaluate_acl(acl, caller("c"), "x", "PROPFIND")
    assert not decision.allowed
    assert decision.message.endswith("verb: POST")


# --- lower-casing -------------------------------------------------------------------------------


def test_request_and_names_are_lower_cased_for_http():
    acl = _one_policy("allow", "allow", {"name": "Admin/**", "httpVerb": ["*"], "action": "deny"})
    assert acl.policies[0].operations[0].name == "/admin/**"
    assert not evaluate_acl(acl, caller("c"), "ADMIN/Users", "GET").allowed


def test_dotted_capital_i_lowers_like_go_not_like_python():
    acl = _one_policy("allow", "allow", {"name": "/admin", "httpVerb": ["*"], "action": "deny"})
    assert not evaluate_acl(acl, caller("c"), "ADM\u0130N", "GET").allowed


# --- the deny ---------------------------------------------------------------------------------


def test_deny_message_is_daprs_byte_for_byte():
    # tests/e2e/allowlists/allowlists_service_invocation_test.go, PermissionDenied desc
    acl = parse_access_control(
        {
            "defaultAction": "allow",
            "trustDomain": "public",
            "policies": [
                {
                    "appId": "allowlists-caller",
                    "defaultAction": "allow",
                    "trustDomain": "public",
                    "namespace": "dapr-tests",
                    "operations": [{"name": "/opDeny", "httpVerb": ["POST"], "action": "deny"}],
                }
            ],
        }
    )
    decision = evaluate_acl(acl, caller("allowlists-caller", "dapr-tests"), "opDeny", "POST")
    assert decision.message == (
        "access control policy has denied access to id: "
        "spiffe://public/ns/dapr-tests/allowlists-caller operation: opDeny verb: POST"
    )
    assert (decision.allowed, decision.layer, decision.reason, decision.status) == (
        False, "acl", "ERR_DIRECT_INVOKE", 403,
    )  # fmt: skip
    assert decision.rule == "policies[allowlists-caller] operations[/opdeny] POST=deny"


def test_deny_without_identity_has_an_empty_id():
    decision = evaluate_acl(parse_access_control({"defaultAction": "deny"}), None, "mcp", "POST")
    assert (
        decision.message
        == "access control policy has denied access to id:  operation: mcp verb: POST"
    )


def test_mcp_tutorial_rules():
    acl = parse_access_control(
        {
            "defaultAction": "deny",
            "trustDomain": "public",
            "policies": [
                {"appId": "mcp-client", "defaultAction": "deny", "trustDomain": "public",
                 "namespace": "default"},
                {"appId": "analyst-agent", "defaultAction": "allow", "trustDomain": "public",
                 "namespace": "default",
                 "operations": [{"name": "/admin/**", "httpVerb": ["POST"], "action": "deny"}]},
            ],
        }
    )  # fmt: skip
    client = evaluate_acl(acl, caller("mcp-client"), "mcp", "POST")
    assert (client.allowed, client.rule) == (False, "policies[mcp-client] defaultAction=deny")
    analyst = evaluate_acl(acl, caller("analyst-agent"), "mcp", "POST")
    assert (analyst.allowed, analyst.rule) == (True, "policies[analyst-agent] defaultAction=allow")
    admin = evaluate_acl(acl, caller("analyst-agent"), "admin/x/y", "POST")
    assert (admin.allowed, admin.rule) == (
        False, "policies[analyst-agent] operations[/admin/**] POST=deny",
    )  # fmt: skip
    assert evaluate_acl(acl, caller("mcp-client"), "mcp", "POST").message.startswith(
        "access control policy has denied access to id: spiffe://public/ns/default/mcp-client"
    )


def test_allow_decisions_are_prebuilt_and_shared():
    acl = parse_access_control({"defaultAction": "allow", "policies": []})
    assert evaluate_acl(acl, caller("a"), "x", "GET") is evaluate_acl(acl, caller("b"), "y", "PUT")


def test_direct_construction_refuses_duplicates_and_bad_actions():
    policy = AppPolicy("a", "default", "public", "allow")
    with pytest.raises(ValueError, match="two policies"):
        AccessControl("deny", "public", (policy, policy))
    with pytest.raises(ValueError, match="default_action"):
        AccessControl("Deny")
