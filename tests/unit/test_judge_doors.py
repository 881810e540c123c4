"""#10.4 playbooks: an app registered as an MCP server has no uninspected door.

Paths outside the MCP endpoint(s) are refused unless an ACL operation written for the caller
names the path and allows the verb; the SDK's legacy HTTP+SSE transport is refused whatever the
ACL says, with an error that says why; several endpoints are all inspected.
"""

from __future__ import annotations

import json

import h11
import pytest

from identity import AppIdentity
from sidecar.errors import PolicyError
from sidecar.judge import Answer, Forward, InboundJudge, InboundSite, ReadBody
from sidecar.pipeline import InboundPolicy, McpRoute
from sidecar.policy.acl import evaluate_acl
from sidecar.proxy.mcp_route import McpSessions
from sidecar.state.policy_builder import mcp_endpoints
from tests._support import mcp_policies
from tests._support.judge_acl import acl_for

ME = AppIdentity("public", "default", "mcp-server")
CALLER = AppIdentity("public", "default", "analyst-agent")
STRANGER = AppIdentity("public", "default", "reader")
ROUTE = McpRoute("mcp", mcp_policies.POLICY, "mcp-server")


def policy_with(operations=None, default="allow", route=ROUTE) -> InboundPolicy:
    if operations is None:
        return InboundPolicy(version="1", mcp=route)
    acl = acl_for(operations, default)
    check = lambda r: evaluate_acl(acl, r.caller, r.method, r.verb)  # noqa: E731
    return InboundPolicy(version="1", head_checks=(check,), mcp=route, acl=acl)


def verdict_for(policy, method: bytes, target: bytes, caller=CALLER, body: bytes = b""):
    judge = InboundJudge(InboundSite(ME, 8000), lambda: policy, McpSessions(), lambda: None)
    headers = [(b"host", b"x"), (b"content-type", b"application/json")]
    if body:
        headers.append((b"content-length", str(len(body)).encode()))
    request = h11.Request(method=method, target=target, headers=headers)
    return judge.head(request, caller, None, "10.0.0.9", 0.0)


def refused(verdict, code: str) -> str:
    assert isinstance(verdict, Answer), verdict
    assert verdict.status == 403
    body = json.loads(verdict.body)
    assert body["errorCode"] == code
    return body["message"]


def test_other_path_without_any_acl_is_refused_naming_the_endpoint():
    message = refused(verdict_for(policy_with(), b"GET", b"/status"), "ERR_MCP_UNINSPECTED_PATH")
    assert "/mcp" in message and "ACL operation" in message


def test_a_default_allow_does_not_open_another_path():
    verdict = verdict_for(policy_with([], default="allow"), b"GET", b"/status")
    refused(verdict, "ERR_MCP_UNINSPECTED_PATH")


@pytest.mark.parametrize("catch_all", ["/**", "/*"])
def test_a_catch_all_operation_does_not_open_another_path(catch_all):
    ops = [{"name": catch_all, "httpVerb": ["*"], "action": "allow"}]
    refused(verdict_for(policy_with(ops), b"GET", b"/status"), "ERR_MCP_UNINSPECTED_PATH")


def test_an_operation_naming_the_path_opens_it_for_that_verb_and_caller_only():
    ops = [{"name": "/status", "httpVerb": ["GET"], "action": "allow"}]
    policy = policy_with(ops)
    assert isinstance(verdict_for(policy, b"GET", b"/status"), Forward)
    assert isinstance(verdict_for(policy, b"GET", b"/STATUS"), Forward)  # the ACL's letter case
    refused(verdict_for(policy, b"POST", b"/status", body=b"{}"), "ERR_MCP_UNINSPECTED_PATH")
    refused(verdict_for(policy, b"GET", b"/status", STRANGER), "ERR_MCP_UNINSPECTED_PATH")


def test_a_wildcard_below_a_named_prefix_counts_as_naming_the_path():
    ops = [{"name": "/api/**", "httpVerb": ["*"], "action": "allow"}]
    assert isinstance(verdict_for(policy_with(ops), b"GET", b"/api/v1/items"), Forward)


@pytest.mark.parametrize(
    "target", [b"/sse", b"/SSE", b"/messages/?session_id=abc", b"/messages", b"/x?session_id=1"]
)
def test_legacy_http_sse_transport_is_refused_even_when_the_acl_names_it(target):
    ops = [
        {"name": "/sse", "httpVerb": ["*"], "action": "allow"},
        {"name": "/messages/**", "httpVerb": ["*"], "action": "allow"},
        {"name": "/x", "httpVerb": ["*"], "action": "allow"},
    ]
    method = b"POST" if target.startswith(b"/messages") else b"GET"
    body = b"{}" if method == b"POST" else b""
    message = refused(
        verdict_for(policy_with(ops), method, target, body=body), "ERR_MCP_LEGACY_TRANSPORT"
    )
    assert "legacy HTTP+SSE transport" in message and "not inspected" in message
    assert "Streamable HTTP at /mcp" in message


def test_every_registered_endpoint_is_inspected():
    route = McpRoute(("mcp", "v2/mcp"), mcp_policies.POLICY, "mcp-server")
    for target in (b"/mcp", b"/v2/mcp", b"/V2/MCP"):
        verdict = verdict_for(policy_with(route=route), b"POST", target, body=b"{}")
        assert isinstance(verdict, ReadBody) and verdict.limit == 4 * 1024 * 1024, target
    refused(verdict_for(policy_with(route=route), b"GET", b"/v2"), "ERR_MCP_UNINSPECTED_PATH")


def test_an_app_that_is_not_an_mcp_server_keeps_every_path():
    policy = InboundPolicy(version="1")
    assert isinstance(verdict_for(policy, b"GET", b"/sse"), Forward)
    assert isinstance(verdict_for(policy, b"GET", b"/status"), Forward)


@pytest.mark.parametrize(
    ("registration", "endpoints"),
    [
        ({"path": "/mcp"}, ("mcp",)),
        ({}, ("mcp",)),
        ({"paths": ["/mcp", "/v2/mcp/"]}, ("mcp", "v2/mcp")),
        ({"path": ["/a", "/b"]}, ("a", "b")),
    ],
)
def test_mcp_server_registrations_name_one_or_several_endpoints(registration, endpoints):
    assert mcp_endpoints(registration) == endpoints


@pytest.mark.parametrize("registration", [{"paths": []}, {"paths": [3]}, {"path": "/a%2Fb"}])
def test_bad_mcp_server_registrations_are_refused(registration):
    with pytest.raises(PolicyError):
        mcp_endpoints(registration)
