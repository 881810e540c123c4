"""Playbooks for the inbound judge: this request in → this verdict, these headers out.

No sockets: the judge is fed request heads (and bodies when it asks for them) and its verdicts
are compared with what the app must, or must never, receive.
"""

from __future__ import annotations

import json

import h11
import pytest

from identity import AppIdentity
from sidecar.judge import Answer, Forward, InboundJudge, InboundSite, ReadBody
from sidecar.judge.inbound import trace_id
from sidecar.pipeline import InboundPolicy, McpRoute
from sidecar.policy.acl import evaluate_acl
from sidecar.proxy.mcp_route import McpSessions
from tests._support import mcp_policies
from tests._support.bearer import NOW, Issuer, claims, make_config
from tests._support.judge_acl import acl_for

ME = AppIdentity("public", "default", "mcp-server")
CALLER = AppIdentity("public", "default", "analyst-agent")
OTHER = AppIdentity("public", "default", "intruder")
APP_TOKEN = b"app-token-0123456789"

TOOLS = mcp_policies.POLICY  # analyst-agent may call add and echo
ROUTE = McpRoute("mcp", TOOLS, "mcp-server")


def acl_check(operations: list[dict], default: str = "deny"):
    acl = acl_for(operations, default)
    return lambda request: evaluate_acl(acl, request.caller, request.method, request.verb)


ALLOW_CALLER = acl_check([], default="allow")


class Policies:
    """The policy in force, switchable between head and body as a reload would."""

    def __init__(self, policy: InboundPolicy) -> None:
        self.now = policy

    def __call__(self) -> InboundPolicy:
        return self.now


class FakeKeySources:
    def __init__(self, issuer: Issuer) -> None:
        self.snapshot = issuer.snapshot()

    def ensure(self, _config):
        return self

    def keys(self):
        return self.snapshot

    def request_refresh(self, _kid) -> bool:
        return False


def judge_for(policy: InboundPolicy, *, app_port: int | None = 8000, token=None, keys=None):
    policies = policy if isinstance(policy, Policies) else Policies(policy)
    site = InboundSite(ME, app_port, app_api_token=token)
    return InboundJudge(site, policies, McpSessions(), lambda: keys), policies


def head(method: bytes, target: bytes, headers=(), body: bytes = b""):
    fields = [(b"host", b"mcp-server"), *headers]
    if body:
        fields.append((b"content-length", str(len(body)).encode()))
    return h11.Request(method=method, target=target, headers=fields)


def judge_head(judge, request, caller=CALLER, now=NOW):
    return judge.head(request, caller, None, "10.0.0.9", now)


def names(headers) -> list[bytes]:
    return [n for n, _ in headers]


def value(headers, name: bytes) -> bytes | None:
    found = [v for n, v in headers if n == name]
    assert len(found) <= 1, (name, found)
    return found[0] if found else None


# --- identity, verb, path -----------------------------------------------------------------


def test_peer_without_identity_is_answered_403_and_never_forwarded():
    judge, _ = judge_for(InboundPolicy(version="1"))
    verdict = judge.head(head(b"GET", b"/x"), None, "certificate has no SPIFFE ID", "h", NOW)
    assert isinstance(verdict, Answer)
    assert verdict.status == 403
    assert json.loads(verdict.body)["errorCode"] == "ERR_PEER_IDENTITY"
    assert verdict.decision.layer == "identity"


def test_non_standard_http_method_is_refused_before_any_policy():
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    verdict = judge_head(judge, head(b"PROPFIND", b"/x"))
    assert isinstance(verdict, Answer) and verdict.status == 405
    assert verdict.decision.reason == "ERR_METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("verb", [b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"])
@pytest.mark.parametrize(
    "framing",
    [[(b"content-length", b"42")], [(b"transfer-encoding", b"chunked")]],
    ids=["content-length", "chunked"],
)
def test_a_body_on_a_method_without_content_is_refused_before_any_policy(verb, framing):
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    verdict = judge_head(judge, head(verb, b"/echo", framing))
    assert isinstance(verdict, Answer) and verdict.status == 400
    assert verdict.decision.reason == "ERR_BODY_NOT_ALLOWED"


@pytest.mark.parametrize("framing", [[], [(b"content-length", b"0")]], ids=["none", "empty"])
def test_a_get_without_a_body_is_forwarded(framing):
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    assert isinstance(judge_head(judge, head(b"GET", b"/echo", framing)), Forward)


def test_a_fragment_in_the_target_is_refused_400():
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    verdict = judge_head(judge, head(b"GET", b"/echo?msg=x#/../admin"))
    assert isinstance(verdict, Answer) and verdict.status == 400


def test_double_encoded_path_is_refused_400():
    judge, _ = judge_for(InboundPolicy(version="1"))
    verdict = judge_head(judge, head(b"GET", b"/admin%252Fsecret"))
    assert isinstance(verdict, Answer) and verdict.status == 400


def test_acl_denial_answers_with_daprs_body_and_names_the_path():
    judge, _ = judge_for(
        InboundPolicy(
            version="7",
            head_checks=(acl_check([{"name": "/public", "httpVerb": ["*"], "action": "allow"}]),),
        )
    )
    verdict = judge_head(judge, head(b"GET", b"/admin/../admin/users"))
    assert isinstance(verdict, Answer) and verdict.status == 403
    assert verdict.decision.layer == "acl"
    assert verdict.facts.path == "admin/users"
    assert verdict.facts.policy_version == "7"


# --- the headers the app receives ---------------------------------------------------------


def test_the_app_gets_the_sidecars_identity_headers_and_none_of_the_callers():
    spoofed = [
        (b"dapr-caller-app-id", b"admin"),
        (b"Dapr_Caller_Namespace", b"prod"),
        (b"x-trustmesh-subject", b"root"),
        (b"x_trustmesh_scopes", b"all"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"dapr-api-token", b"the-callers-own-token"),
        (b"dapr-app-id", b"elsewhere"),
        (b"x-http-method-override", b"DELETE"),
        (b"accept", b"application/json"),
    ]
    judge, _ = judge_for(InboundPolicy(version="1"), token=APP_TOKEN)
    verdict = judge_head(judge, head(b"GET", b"/items?x=1", spoofed))
    assert isinstance(verdict, Forward)
    sent = verdict.plan.head
    assert sent.target == b"/items?x=1"
    assert sorted(names(sent.headers)) == sorted(
        [
            b"accept",
            b"host",
            b"dapr-caller-app-id",
            b"dapr-caller-namespace",
            b"dapr-callee-app-id",
            b"x-forwarded-for",
            b"forwarded",
            b"dapr-api-token",
        ]
    )
    assert value(sent.headers, b"dapr-caller-app-id") == b"analyst-agent"
    assert value(sent.headers, b"dapr-caller-namespace") == b"default"
    assert value(sent.headers, b"x-forwarded-for") == b"10.0.0.9"
    assert value(sent.headers, b"host") == b"127.0.0.1:8000"
    assert value(sent.headers, b"dapr-api-token") == APP_TOKEN


def test_a_callers_dapr_api_token_never_reaches_the_app_without_an_app_token():
    judge, _ = judge_for(InboundPolicy(version="1"))
    verdict = judge_head(judge, head(b"GET", b"/x", [(b"dapr-api-token", b"guess")]))
    assert isinstance(verdict, Forward)
    assert value(verdict.plan.head.headers, b"dapr-api-token") is None


def test_authorization_is_stripped_when_the_policy_says_so():
    policy = InboundPolicy(version="1", strip_headers=frozenset({b"authorization"}))
    judge, _ = judge_for(policy)
    verdict = judge_head(judge, head(b"GET", b"/x", [(b"authorization", b"Bearer t")]))
    assert isinstance(verdict, Forward)
    assert b"authorization" not in names(verdict.plan.head.headers)


def test_an_app_without_a_port_is_answered_404():
    judge, _ = judge_for(InboundPolicy(version="1"), app_port=None)
    verdict = judge_head(judge, head(b"GET", b"/x"))
    assert isinstance(verdict, Answer) and verdict.status == 404


def test_trace_id_is_read_from_traceparent():
    good = [(b"traceparent", b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")]
    assert trace_id(good) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id([(b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")]) is None
    assert trace_id([(b"traceparent", b"garbage")]) is None
    assert trace_id([]) is None


# --- bodies: read, then judged under the policy in force when complete ----------------------


def test_small_body_is_read_then_forwarded_whole_with_its_length():
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    first = judge_head(judge, head(b"POST", b"/orders", body=b'{"n":1}'))
    assert isinstance(first, ReadBody)
    verdict = judge.body(first, b'{"n":1}', NOW)
    assert isinstance(verdict, Forward)
    assert verdict.plan.body == b'{"n":1}'
    assert value(verdict.plan.head.headers, b"content-length") == b"7"


def test_chunked_body_is_streamed_not_read():
    judge, _ = judge_for(InboundPolicy(version="1"))
    request = head(b"POST", b"/upload", [(b"transfer-encoding", b"chunked")])
    verdict = judge_head(judge, request)
    assert isinstance(verdict, Forward) and verdict.plan.body is None
    assert value(verdict.plan.head.headers, b"transfer-encoding") == b"chunked"


def test_acl_revoked_while_the_body_arrived_refuses_the_request():
    policies = Policies(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    judge, _ = judge_for(policies)
    first = judge_head(judge, head(b"POST", b"/orders", body=b"{}"))
    assert isinstance(first, ReadBody)
    policies.now = InboundPolicy(version="2", head_checks=(acl_check([]),))
    verdict = judge.body(first, b"{}", NOW)
    assert isinstance(verdict, Answer) and verdict.status == 403
    assert verdict.facts.policy_version == "2"


def test_unchanged_policy_is_not_evaluated_twice():
    calls = []

    def counting(request):
        calls.append(request.method)
        return ALLOW_CALLER(request)

    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(counting,)))
    first = judge_head(judge, head(b"POST", b"/orders", body=b"{}"))
    assert isinstance(judge.body(first, b"{}", NOW), Forward)
    assert calls == ["orders"]


def mcp_call(tool: str, request_id: int = 1) -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {"a": 1}},
        }
    ).encode()


MCP_HEADERS = [(b"content-type", b"application/json"), (b"mcp-protocol-version", b"2025-06-18")]


def test_mcp_post_is_read_up_to_the_inspection_limit_then_judged():
    judge, _ = judge_for(InboundPolicy(version="1", mcp=ROUTE))
    body = mcp_call("add")
    first = judge_head(judge, head(b"POST", b"/mcp", MCP_HEADERS, body))
    assert isinstance(first, ReadBody) and first.limit == 4 * 1024 * 1024
    verdict = judge.body(first, body, NOW)
    assert isinstance(verdict, Forward) and verdict.plan.body == body
    assert b"accept-encoding" not in names(verdict.plan.head.headers)
    assert verdict.facts.mcp_methods == ("tools/call",)


def test_ungranted_tool_call_is_answered_and_never_forwarded():
    judge, _ = judge_for(InboundPolicy(version="1", mcp=ROUTE))
    body = mcp_call("delete_everything")
    first = judge_head(judge, head(b"POST", b"/mcp", MCP_HEADERS, body))
    verdict = judge.body(first, body, NOW)
    assert isinstance(verdict, Answer) and verdict.status == 403
    assert verdict.decision.layer == "mcp"


def test_grant_revoked_while_the_body_arrived_refuses_the_call():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, _ = judge_for(policies)
    body = mcp_call("add")
    first = judge_head(judge, head(b"POST", b"/mcp", MCP_HEADERS, body))
    revoked = McpRoute("mcp", TOOLS.deny_all("mcp-server"), "mcp-server")
    policies.now = InboundPolicy(version="2", mcp=revoked)
    verdict = judge.body(first, body, NOW)
    assert isinstance(verdict, Answer) and verdict.status == 403
    assert verdict.facts.policy_version == "2"


def test_delete_of_a_session_ends_its_filter_state_only_on_success():
    judge, _ = judge_for(InboundPolicy(version="1", mcp=ROUTE))
    judge.sessions.claim(CALLER, "s-1")  # the caller's own session (issued to it earlier)
    pending = judge.sessions.get(CALLER, "s-1")
    verdict = judge_head(judge, head(b"DELETE", b"/mcp", [(b"mcp-session-id", b"s-1")]))
    assert isinstance(verdict, Forward) and verdict.plan.after is not None
    verdict.plan.after(500)
    assert judge.sessions.get(CALLER, "s-1") is pending
    verdict.plan.after(200)
    assert judge.sessions.get(CALLER, "s-1") is not pending


# --- an exchange under way, judged again under a new policy --------------------------------


def rejudge(judge, request, body=None, caller=CALLER, now=NOW):
    return judge.rejudge(request, caller, None, "10.0.0.9", None, body, now)


def test_an_exchange_the_new_policy_still_allows_is_left_alone():
    policies = Policies(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    judge, _ = judge_for(policies)
    request = head(b"GET", b"/events")
    assert isinstance(judge_head(judge, request), Forward)
    policies.now = InboundPolicy(version="2", head_checks=(ALLOW_CALLER,))
    assert rejudge(judge, request) is None


def test_an_exchange_whose_acl_grant_was_revoked_is_refused_with_the_acls_reason():
    policies = Policies(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    judge, _ = judge_for(policies)
    request = head(b"GET", b"/events")
    assert isinstance(judge_head(judge, request), Forward)
    policies.now = InboundPolicy(version="2", head_checks=(acl_check([], default="deny"),))
    refusal = rejudge(judge, request)
    assert refusal is not None and not refusal.allowed and refusal.layer == "acl"


def test_a_tool_call_whose_grant_was_revoked_is_refused_by_the_mcp_layer():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, _ = judge_for(policies)
    body = mcp_call("add")
    request = head(b"POST", b"/mcp", MCP_HEADERS, body)
    assert isinstance(judge.body(judge_head(judge, request), body, NOW), Forward)
    assert rejudge(judge, request, body) is None  # twin: the same policy still allows it
    revoked = McpRoute("mcp", TOOLS.deny_all("mcp-server"), "mcp-server")
    policies.now = InboundPolicy(version="2", mcp=revoked)
    refusal = rejudge(judge, request, body)
    assert refusal is not None and refusal.layer == "mcp"


def test_a_body_the_new_policy_would_inspect_but_that_streamed_unread_is_refused():
    # A POST to /mcp streamed through before the app became an MCP server: its body was never
    # read, so the tool policy now in force cannot judge it.
    policies = Policies(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    judge, _ = judge_for(policies)
    request = head(b"POST", b"/mcp", [*MCP_HEADERS, (b"transfer-encoding", b"chunked")])
    assert isinstance(judge_head(judge, request), Forward)
    policies.now = InboundPolicy(version="2", mcp=ROUTE)
    refusal = rejudge(judge, request, None)
    assert refusal is not None and refusal.reason == "ERR_BODY_NOT_JUDGED"


def test_a_small_body_read_only_to_move_it_whole_needs_no_second_read():
    policies = Policies(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    judge, _ = judge_for(policies)
    request = head(b"POST", b"/echo", body=b"x")
    assert isinstance(judge_head(judge, request), ReadBody)
    assert rejudge(judge, request, None) is None


def test_judging_an_exchange_again_registers_nothing_in_the_mcp_sessions():
    policies = Policies(InboundPolicy(version="1", mcp=ROUTE))
    judge, _ = judge_for(policies)
    body = mcp_call("add")
    request = head(b"POST", b"/mcp", [*MCP_HEADERS, (b"mcp-session-id", b"s-1")], body)
    judge.sessions.claim(CALLER, "s-1")
    pending = judge.sessions.get(CALLER, "s-1")
    before = list(pending)
    assert rejudge(judge, request, body) is None
    assert judge.sessions.get(CALLER, "s-1") is pending and list(pending) == before


# --- bearer: the token is checked again when the body completes ---------------------------


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def bearer_policy() -> InboundPolicy:
    return InboundPolicy(
        version="1",
        head_checks=(ALLOW_CALLER,),
        bearer=make_config(leeway=5.0),
        strip_headers=frozenset({b"authorization"}),
    )


def test_token_that_expires_while_the_body_arrives_is_refused(issuer):
    judge, _ = judge_for(bearer_policy(), keys=FakeKeySources(issuer))
    token = issuer.mint(claims(exp=int(NOW) + 30))
    request = head(b"POST", b"/orders", [(b"authorization", f"Bearer {token}".encode())], b"{}")
    first = judge_head(judge, request, now=NOW)
    assert isinstance(first, ReadBody)
    assert first.facts.bearer_subject == "alice"
    verdict = judge.body(first, b"{}", NOW + 36)  # past exp + leeway
    assert isinstance(verdict, Answer) and verdict.status == 401


def test_token_still_valid_when_the_body_completes_is_forwarded_with_its_subject(issuer):
    judge, _ = judge_for(bearer_policy(), keys=FakeKeySources(issuer))
    token = issuer.mint(claims(exp=int(NOW) + 30))
    request = head(b"POST", b"/orders", [(b"authorization", f"Bearer {token}".encode())], b"{}")
    first = judge_head(judge, request, now=NOW)
    verdict = judge.body(first, b"{}", NOW + 34)  # within exp + leeway
    assert isinstance(verdict, Forward)
    sent = verdict.plan.head.headers
    assert b"authorization" not in names(sent)
    assert value(sent, b"x-trustmesh-subject") == b"alice"


def test_a_forward_judged_with_a_token_carries_when_the_token_expires(issuer):
    # The relay ends a streamed answer then: exp plus the leeway the token check forgave.
    judge, _ = judge_for(bearer_policy(), keys=FakeKeySources(issuer))
    token = issuer.mint(claims(exp=int(NOW) + 30))
    request = head(b"GET", b"/events", [(b"authorization", f"Bearer {token}".encode())])
    verdict = judge_head(judge, request, now=NOW)
    assert isinstance(verdict, Forward)
    assert verdict.plan.token_expires == NOW + 30 + 5.0


def test_twin_a_forward_without_a_bearer_layer_has_no_token_expiry():
    judge, _ = judge_for(InboundPolicy(version="1", head_checks=(ALLOW_CALLER,)))
    verdict = judge_head(judge, head(b"GET", b"/events", []), now=NOW)
    assert isinstance(verdict, Forward) and verdict.plan.token_expires is None
