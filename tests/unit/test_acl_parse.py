"""Every refusal of the ACL and Configuration parsers, with its exact location and message, and
the hosted product's reference YAMLs (``reference/hosted-acl-reference.txt``)."""

from __future__ import annotations

import pytest
import yaml

from identity import AppIdentity
from sidecar.errors import ResourceInvalid
from sidecar.policy.acl import evaluate_acl
from sidecar.policy.acl_parse import parse_access_control
from sidecar.policy.configuration import (
    Configuration,
    Handler,
    build_configuration,
    configuration_to_document,
    parse_configuration,
)


def policy(**fields):
    base = {"appId": "mcp-client", "trustDomain": "public", "namespace": "default"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def refusal(spec) -> ResourceInvalid:
    with pytest.raises(ResourceInvalid) as info:
        parse_access_control(spec)
    return info.value


P = "spec.accessControl"

REFUSALS = [
    # (id, accessControl block, location, message)
    ("not a mapping", ["deny"], P, "must be a mapping, not list"),
    ("unknown top-level key", {"defaultaction": "deny"}, f"{P}.defaultaction",
     "unknown field 'defaultaction' (did you mean 'defaultAction'?); known fields: "
     "defaultAction, trustDomain, policies"),
    ("unknown policy key", {"policies": [policy(appID="x")]}, f"{P}.policies[0].appID",
     "unknown field 'appID' (did you mean 'appId'?); known fields: appId, defaultAction, "
     "trustDomain, namespace, operations"),
    ("unknown operation key",
     {"policies": [policy(operations=[{"name": "/a", "verbs": ["GET"], "action": "allow"}])]},
     f"{P}.policies[0].operations[0].verbs",
     "unknown field 'verbs'; known fields: name, httpVerb, action"),
    ("policies is a string", {"policies": "mcp-client"}, f"{P}.policies",
     "must be a list, not str ('mcp-client')"),
    ("policy is a string", {"policies": ["mcp-client"]}, f"{P}.policies[0]",
     "a policy must be a mapping, not str"),
    ("defaultAction is a bool", {"defaultAction": True}, f"{P}.defaultAction",
     "must be a string, not bool (True)"),
    ("trustDomain is a number", {"trustDomain": 7}, f"{P}.trustDomain",
     "must be a string, not int (7)"),
    ("global action typo", {"defaultAction": "alow"}, f"{P}.defaultAction",
     "defaultAction must be 'allow' or 'deny', not 'alow' (Dapr would silently treat it as deny)"),
    ("policy action typo", {"policies": [policy(defaultAction="permit")]},
     f"{P}.policies[0].defaultAction",
     "defaultAction must be 'allow' or 'deny', not 'permit' (Dapr would silently treat it as "
     "deny)"),
    ("operation action typo",
     {"policies": [policy(operations=[{"name": "/a", "httpVerb": ["GET"], "action": "Alow"}])]},
     f"{P}.policies[0].operations[0].action",
     "action must be 'allow' or 'deny', not 'Alow' (Dapr would silently treat it as deny)"),
    ("missing trustDomain",
     {"defaultAction": "deny", "trustDomain": "public",
      "policies": [policy(), policy(appId="b"), policy(appId="c", trustDomain=None)]},
     f"{P}.policies[2].trustDomain",
     "missing trustDomain for appId 'c': Dapr requires every policy to name its caller's trust "
     "domain and does not take it from the top-level trustDomain; add `trustDomain: \"public\"` "
     "to this policy"),
    ("missing trustDomain suggests the global one",
     {"trustDomain": "corp", "policies": [policy(trustDomain="")]},
     f"{P}.policies[0].trustDomain",
     "missing trustDomain for appId 'mcp-client': Dapr requires every policy to name its "
     "caller's trust domain and does not take it from the top-level trustDomain; add "
     "`trustDomain: \"corp\"` to this policy"),
    ("missing namespace", {"policies": [policy(namespace=None)]}, f"{P}.policies[0].namespace",
     "missing namespace for appId 'mcp-client': Dapr requires every policy to name its caller's "
     "namespace; add `namespace: \"default\"` to this policy"),
    ("missing appId", {"policies": [policy(appId=None)]}, f"{P}.policies[0].appId",
     "missing appId: every policy names the caller App ID it applies to"),
    ("trust domain no caller can have", {"policies": [policy(trustDomain="myDomain")]},
     f"{P}.policies[0].trustDomain",
     "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and "
     "underscores: 'myDomain'; no caller's SPIFFE ID can carry 'myDomain', so this could never "
     "match"),
    ("app id no caller can have", {"policies": [policy(appId="a/b")]}, f"{P}.policies[0].appId",
     "invalid app ID 'a/b': path segment characters are limited to letters, numbers, dots, "
     "dashes, and underscores: 'a/b'; no caller's SPIFFE ID can carry 'a/b', so this could "
     "never match"),
    ("operation without name", {"policies": [policy(operations=[{"action": "allow"}])]},
     f"{P}.policies[0].operations[0].name",
     "missing name: an operation needs a name such as /mcp"),
    ("operation without action", {"policies": [policy(operations=[{"name": "/a"}])]},
     f"{P}.policies[0].operations[0].action", "missing action: write 'allow' or 'deny'"),
    ("httpVerb is a string",
     {"policies": [policy(operations=[{"name": "/a", "httpVerb": "POST", "action": "allow"}])]},
     f"{P}.policies[0].operations[0].httpVerb", "must be a list, not str ('POST')"),
    ("lower-case verb",
     {"policies": [policy(operations=[{"name": "/a", "httpVerb": ["GET", "post"],
                                       "action": "deny"}])]},
     f"{P}.policies[0].operations[0].httpVerb[1]",
     "httpVerb 'post' would never match: Dapr compares verbs case-sensitively with upper-case "
     "names; write 'POST'"),
    ("unknown verb",
     {"policies": [policy(operations=[{"name": "/a", "httpVerb": ["FETCH"], "action": "deny"}])]},
     f"{P}.policies[0].operations[0].httpVerb[0]",
     "unknown httpVerb 'FETCH'; expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, "
     "TRACE, PATCH or '*'"),
    ("duplicate policy", {"policies": [policy(), policy(appId="other"), policy()]},
     f"{P}.policies[2]",
     "policies[0] and policies[2] both apply to appId 'mcp-client' in namespace 'default'; Dapr "
     "would silently use only the later one, so merge them into one policy"),
    ("duplicate operation after normalisation",
     {"policies": [policy(operations=[
         {"name": "/admin", "httpVerb": ["*"], "action": "deny"},
         {"name": "/x", "httpVerb": ["*"], "action": "deny"},
         {"name": "Admin", "httpVerb": ["GET"], "action": "allow"}])]},
     f"{P}.policies[0].operations[2].name",
     "operations[0] and operations[2] both name '/admin' (after adding '/' and lower-casing); "
     "Dapr would silently use only the first one, so merge them"),
    ("empty segment",
     {"policies": [policy(operations=[{"name": "/a//b", "httpVerb": ["*"], "action": "deny"}])]},
     f"{P}.policies[0].operations[0].name",
     "operation name '/a//b' has an empty, '.' or '..' segment; request paths are normalised "
     "before the ACL, so this name could never match"),
    ("star segment in the middle",
     {"policies": [policy(operations=[{"name": "/a/*/b", "httpVerb": ["*"], "action": "deny"}])]},
     f"{P}.policies[0].operations[0].name",
     "operation name '/a/*/b' has '*' as a whole segment before the end; Dapr never matches "
     "that against a real segment (use '**' for exactly one segment there)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "location", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusal(spec, location, message):
    error = refusal(spec)
    assert (error.location, error.reason) == (location, message)
    assert str(error) == f"{location}: {message}"


def test_accepted_spellings():
    acl = parse_access_control(
        {
            "defaultAction": "Deny",
            "policies": [
                policy(
                    defaultAction="ALLOW",
                    operations=[
                        {"name": "mcp", "httpVerb": ["POST", "POST", "*"], "action": "DENY"},
                        {"name": "/", "httpVerb": None, "action": "allow"},
                        {"name": "/**", "action": "allow"},
                    ],
                )
            ],
        }
    )
    ops = acl.policies[0].operations
    assert [(op.name, op.http_verbs, op.action) for op in ops] == [
        ("/mcp", ("POST", "*"), "deny"),
        ("/", (), "allow"),
        ("/**", (), "allow"),
    ]
    assert acl.policies[0].default_action == "allow"


# --- the hosted product's reference YAMLs ----------------------------------------------------

HOSTED_MCP_SERVER_DENY = """
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: mcp-server-deny
spec:
  accessControl:
    defaultAction: deny # callers not listed below are denied
    trustDomain: "public"
    policies:
    - appId: mcp-client
      defaultAction: deny # this caller is explicitly denied
      namespace: "default"
"""

HOSTED_DENY_ALL = """
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: mcp-policy
spec:
  accessControl:
    defaultAction: deny
    trustDomain: "public"
"""

HOSTED_ALLOW_ANALYST = """
spec:
  accessControl:
    defaultAction: deny
    trustDomain: "public"
    policies:
    - appId: analyst-agent
      defaultAction: allow
      namespace: "default"
"""


def test_hosted_mcp_server_deny_is_refused_with_the_line_to_add():
    with pytest.raises(ResourceInvalid) as info:
        parse_configuration(yaml.safe_load(HOSTED_MCP_SERVER_DENY))
    assert info.value.location == "spec.accessControl.policies[0].trustDomain"
    assert 'add `trustDomain: "public"` to this policy' in str(info.value)


def test_hosted_mcp_server_deny_loads_once_the_policy_names_its_trust_domain():
    fixed = HOSTED_MCP_SERVER_DENY.replace(
        'namespace: "default"', 'namespace: "default"\n      trustDomain: "public"'
    )
    config = parse_configuration(yaml.safe_load(fixed))
    assert config == build_configuration("mcp-server-deny", "deny", [("mcp-client", "deny")])


def test_hosted_deny_all_baseline():
    config = parse_configuration(yaml.safe_load(HOSTED_DENY_ALL))
    assert config.name == "mcp-policy"
    decision = evaluate_acl(
        config.access_control, AppIdentity("public", "default", "any"), "mcp", "POST"
    )
    assert (decision.allowed, decision.rule) == (False, "global defaultAction=deny")


def test_hosted_allow_analyst_snippet_is_refused_too():
    error = refusal(yaml.safe_load(HOSTED_ALLOW_ANALYST)["spec"]["accessControl"])
    assert error.location == "spec.accessControl.policies[0].trustDomain"


# --- Configuration documents ----------------------------------------------------------------


def test_cli_configuration_create_means_this_document():
    config = build_configuration(
        "mcp-server-deny", "deny", [("mcp-client", "deny")], "public", "default"
    )
    assert configuration_to_document(config) == {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "mcp-server-deny"},
        "spec": {
            "accessControl": {
                "defaultAction": "deny",
                "trustDomain": "public",
                "policies": [
                    {
                        "appId": "mcp-client",
                        "defaultAction": "deny",
                        "trustDomain": "public",
                        "namespace": "default",
                    }
                ],
            }
        },
    }


def test_cli_refuses_bad_app_ids_and_actions():
    with pytest.raises(ResourceInvalid) as info:
        build_configuration("c", "deny", [("ok", "allow"), ("bad.app", "deny")])
    assert info.value.location == "spec.accessControl.policies[1].appId"
    assert "dots are reserved" in str(info.value)
    with pytest.raises(ResourceInvalid, match="not 'maybe'"):
        build_configuration("c", "deny", [("ok", "maybe")])


FULL_DOCUMENT = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Configuration",
    "metadata": {"name": "server-config", "namespace": "default", "labels": {"a": "b"},
                 "uid": "123", "resourceVersion": "9"},
    "spec": {
        "accessControl": {
            "defaultAction": "deny",
            "trustDomain": "public",
            "policies": [policy(defaultAction="allow", operations=[
                {"name": "/admin/**", "httpVerb": ["POST"], "action": "deny"}])],
        },
        "httpPipeline": {"handlers": [{"name": "bearer-auth", "type": "middleware.http.bearer"}]},
        "appHttpPipeline": {"handlers": [{"name": "u", "type": "middleware.http.uppercase",
                                          "version": "v1"}]},
        "tracing": {"samplingRate": "1", "zipkin": {"endpointAddress": "http://z:9411"}},
        "features": [{"name": "x", "enabled": True}],
        "mtls": {"enabled": True},
    },
}  # fmt: skip


def test_configuration_round_trip():
    config = parse_configuration(FULL_DOCUMENT)
    assert isinstance(config, Configuration)
    assert config.http_pipeline == (Handler("bearer-auth", "middleware.http.bearer"),)
    assert config.app_http_pipeline == (Handler("u", "middleware.http.uppercase", "v1"),)
    assert config.namespace == "default"
    assert set(config.ignored_spec) == {"tracing", "features", "mtls"}
    document = configuration_to_document(config)
    assert document["spec"]["tracing"] == FULL_DOCUMENT["spec"]["tracing"]
    assert document["spec"]["features"] == FULL_DOCUMENT["spec"]["features"]
    assert parse_configuration(document) == config
    assert parse_configuration(yaml.safe_load(yaml.safe_dump(document))) == config


def _doc(**changes):
    doc = {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "c"},
        "spec": {},
    }
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = doc
        for key in parents:
            target = target[key]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return doc


DOCUMENT_REFUSALS = [
    ("wrong apiVersion", _doc(apiVersion="dapr.io/v1"), "apiVersion",
     "must be 'dapr.io/v1alpha1', not 'dapr.io/v1'"),
    ("wrong kind", _doc(kind="Component"), "kind", "must be 'Configuration', not 'Component'"),
    ("missing metadata", _doc(metadata=None), "metadata",
     "missing metadata: a Configuration needs metadata.name"),
    ("missing name", _doc(metadata={}), "metadata.name",
     "missing name: a Configuration needs metadata.name"),
    ("bad name", _doc(metadata={"name": "My_Config"}), "metadata.name",
     "invalid name 'My_Config': use at most 63 lower-case letters, digits and '-', starting "
     "and ending with a letter or digit"),
    ("name too long", _doc(metadata={"name": "a" * 64}), "metadata.name",
     f"invalid name {'a' * 64!r}: use at most 63 lower-case letters, digits and '-', starting "
     "and ending with a letter or digit"),
    ("unknown metadata", _doc(metadata={"name": "c", "nmae": "x"}), "metadata.nmae",
     "unknown field 'nmae' (did you mean 'name'?); known fields: name, namespace, labels, "
     "annotations"),
    ("unknown document key", _doc(status={}), "status",
     "unknown field 'status'; known fields: apiVersion, kind, metadata, spec"),
    ("spec typo", _doc(spec={"acessControl": {}}), "spec.acessControl",
     "unknown field 'acessControl' (did you mean 'accessControl'?); known fields: "
     "accessControl, httpPipeline, appHttpPipeline, tracing, metric, metrics, mtls, secrets, "
     "nameResolution, features, api, components, logging, wasm, workflow"),
    ("spec not a mapping", _doc(spec=["x"]), "spec", "must be a mapping, not list (['x'])"),
    ("handlers not a list", _doc(spec={"httpPipeline": {"handlers": {"name": "x"}}}),
     "spec.httpPipeline.handlers", "must be a list, not dict ({'name': 'x'})"),
    ("handler without type", _doc(spec={"httpPipeline": {"handlers": [{"name": "x"}]}}),
     "spec.httpPipeline.handlers[0].type", "missing type, e.g. middleware.http.bearer"),
    ("handler selector unsupported",
     _doc(spec={"appHttpPipeline": {"handlers": [{"name": "x", "type": "t", "selector": {}}]}}),
     "spec.appHttpPipeline.handlers[0].selector",
     "unknown field 'selector'; known fields: name, type, version"),
    ("accessControl inside a document", _doc(spec={"accessControl": {"policies": [policy(
        trustDomain=None)]}}), "spec.accessControl.policies[0].trustDomain", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "location", "message"),
    [r[1:] for r in DOCUMENT_REFUSALS],
    ids=[r[0] for r in DOCUMENT_REFUSALS],
)
def test_document_refusal(doc, location, message):
    with pytest.raises(ResourceInvalid) as info:
        parse_configuration(doc)
    assert info.value.location == location
    if message is not None:
        assert info.value.reason == message


def test_document_without_access_control_has_none():
    config = parse_configuration(_doc())
    assert config == Configuration("c")
    assert configuration_to_document(config)["spec"] == {}
