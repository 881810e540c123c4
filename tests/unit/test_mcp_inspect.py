"""inspect_request: allow/deny per method category, exact JSON-RPC error bodies, and every
bypass from notes §5 paired with the legitimate request that passes."""

from __future__ import annotations

import base64
import json

import pytest

from sidecar.mcp import inspect_request
from tests._support.mcp_policies import CALLER, POLICY, body, req


def judge(payload, *, caller=CALLER, headers=None, version=None):
    data = payload if isinstance(payload, bytes) else body(payload)
    return inspect_request(
        data, caller=caller, policy=POLICY, headers=headers or {}, negotiated_version=version
    )


def error_of(verdict):
    return json.loads(verdict.decision.response_body())


# --- categories: allow and deny ------------------------------------------------------------------

ALLOW = [
    req("tools/call", {"name": "add", "arguments": {"a": 1}}),
    req("tools/call", {"name": "echo", "task": {"ttl": 1000}}, id_="t1"),
    req("resources/read", {"uri": "file:///ok.txt"}),
    req("resources/subscribe", {"uri": "file:///ok.txt"}),
    req("resources/unsubscribe", {"uri": "file:///ok.txt"}),
    req("prompts/get", {"name": "review"}),
    req("completion/complete", {"ref": {"type": "ref/prompt", "name": "review"},
                                "argument": {"name": "a", "value": "b"}}),
    req("completion/complete", {"ref": {"type": "ref/resource", "uri": "db://{table}"},
                                "argument": {"name": "table", "value": "u"}}),
    req("initialize", {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {}}),
    req("ping"),
    req("logging/setLevel", {"level": "info"}),
    {"jsonrpc": "2.0", "method": "notifications/initialized"},
    {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}},
    {"jsonrpc": "2.0", "method": "notifications/vendor/anything"},
    {"jsonrpc": "2.0", "id": 5, "result": {"roots": []}},
    {"jsonrpc": "2.0", "id": 6, "error": {"code": -1, "message": "user declined"}},
]  # fmt: skip


@pytest.mark.parametrize("message", ALLOW, ids=lambda m: m.get("method", "response"))
def test_allowed(message):
    verdict = judge(message)
    assert verdict.allowed, verdict.decision.message
    assert verdict.protocol_version == "2025-03-26"  # no header ⇒ 2025-03-26


DENY = [
    (req("tools/call", {"name": "rm"}), "tool 'rm' is not granted to caller 'analyst-agent'"),
    (req("tools/call", {"name": "ADD"}), "tool 'ADD' is not granted to caller 'analyst-agent'"),
    (req("resources/read", {"uri": "file:///secret"}),
     "resource 'file:///secret' is not granted to caller 'analyst-agent'"),
    (req("resources/read", {"uri": "db://users"}),  # a template grant does not grant its URIs
     "resource 'db://users' is not granted to caller 'analyst-agent'"),
    (req("resources/subscribe", {"uri": "file:///secret"}),
     "resource 'file:///secret' is not granted to caller 'analyst-agent'"),
    (req("prompts/get", {"name": "other"}),
     "prompt 'other' is not granted to caller 'analyst-agent'"),
    (req("completion/complete", {"ref": {"type": "ref/prompt", "name": "other"}}),
     "prompt 'other' is not granted to caller 'analyst-agent'"),
    (req("completion/complete", {"ref": {"type": "ref/resource", "uri": "file:///secret"}}),
     "resource 'file:///secret' is not granted to caller 'analyst-agent'"),
]  # fmt: skip


@pytest.mark.parametrize(("message", "text"), DENY)
def test_denied_items_get_403_with_jsonrpc_error(message, text):
    verdict = judge(message)
    assert not verdict.allowed
    assert verdict.decision.status == 403
    assert error_of(verdict) == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32003, "message": text},
    }


def test_exact_body_for_an_ungranted_tool():
    verdict = judge(req("tools/call", {"name": "x"}, id_=42))
    assert verdict.decision.response_body() == (
        b'{"jsonrpc":"2.0","id":42,"error":{"code":-32003,'
        b"\"message\":\"tool 'x' is not granted to caller 'analyst-agent'\"}}"
    )
    assert verdict.decision.reason == "tool_not_granted"
    assert verdict.decision.rule == "policy mcp-server: no rule grants it"


def test_allowed_call_names_the_rule():
    verdict = judge(req("tools/call", {"name": "add"}))
    assert verdict.decision.rule.startswith(
        "rules[0] callers=[analyst-agent] grants tools=[add, echo]"
    )
    assert verdict.request_ids == (1,) and verdict.pending == ()


def test_caller_without_any_grant_is_refused_every_message():
    for message in (
        req("ping"),
        req("tools/list"),
        {"jsonrpc": "2.0", "method": "notifications/x"},
    ):
        verdict = judge(message, caller="stranger")
        assert verdict.decision.status == 403
        assert error_of(verdict) == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {
                "code": -32003,
                "message": "session refused: caller 'stranger' holds no grant on MCP server "
                "'mcp-server'",
            },
        }
    assert judge(b"not even json", caller="stranger").decision.reason == "session_refused"


def test_unknown_and_misdirected_methods_are_denied_by_name():
    cases = {
        "foo/bar": "method 'foo/bar' is not defined by MCP",
        "Tools/Call": "method 'Tools/Call' is not defined by MCP",
        "sampling/createMessage": "method 'sampling/createMessage' is sent by servers, not clients",
        "tasks/get": "method 'tasks/get' is not defined in protocol version 2025-03-26",
    }
    for method, text in cases.items():
        verdict = judge(req(method, {}, id_=3))
        assert verdict.decision.status == 403
        assert error_of(verdict)["error"] == {"code": -32601, "message": text}


def test_tasks_need_a_tools_grant():
    verdict = judge(req("tasks/get", {"taskId": "t"}), version="2025-11-25")
    assert verdict.allowed
    verdict = judge(req("tasks/result", {"taskId": "t"}), caller="reader", version="2025-11-25")
    assert verdict.decision.status == 403
    assert verdict.decision.reason == "tasks_not_granted"


def test_list_requests_are_allowed_and_reported_for_filtering():
    for method in ("tools/list", "resources/list", "resources/templates/list", "prompts/list"):
        verdict = judge(req(method, {"cursor": "c"}, id_=7))
        assert verdict.allowed
        (pending,) = verdict.pending
        assert (pending.request_id, pending.method, str(pending.caller)) == (
            7,
            method,
            f"default/{CALLER}",
        )
    assert judge(req("tools/list", id_="7")).pending[0].request_id == "7"


# --- malformed messages: 400 --------------------------------------------------------------------

MALFORMED = [
    (b"[1", -32700, None),
    (b'"just a string"', -32600, None),
    (body({"id": 1, "method": "ping"}), -32600, 1),
    (body({"jsonrpc": "1.0", "id": 1, "method": "ping"}), -32600, 1),
    (body({"jsonrpc": "2.0", "id": 1, "method": 5}), -32600, 1),
    (body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ["add"]}), -32600, 1),
    (body({"jsonrpc": "2.0", "id": True, "method": "ping"}), -32600, None),
    (body({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}), -32600, None),
    (body({"jsonrpc": "2.0", "id": None, "method": "ping"}), -32600, None),
    (body({"jsonrpc": "2.0", "id": 1, "method": "ping", "extra": 1}), -32600, 1),
    (body({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "rm"}}), -32600, None),
    (body({"jsonrpc": "2.0", "id": 1, "method": "notifications/initialized"}), -32600, 1),
    (body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}), -32602, 1),
    (body({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": [1]}}), -32602, 1),
    (body({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {}}), -32600, 1),
    (body({"jsonrpc": "2.0", "id": 1}), -32600, 1),
]  # fmt: skip


@pytest.mark.parametrize(("data", "code", "id_"), MALFORMED)
def test_malformed_is_400(data, code, id_):
    verdict = judge(data)
    assert verdict.decision.status == 400, verdict.decision.message
    error = error_of(verdict)
    assert (error["id"], error["error"]["code"]) == (id_, code)


# --- parser differentials (notes §5.1, §5.2), each with its legitimate twin ---------------------

CALL_ADD = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}'

DIFFERENTIALS = {
    "duplicate name keys": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"add","name":"rm"}}',
    "Name beside name": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"add","Name":"rm"}}',
    "Name alone": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"Name":"rm"}}',
    "Method alone": b'{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"rm"}}',
    "trailing NUL key": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"add","name\\u0000":"rm"}}',
    "trailing NUL key alone": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name\\u0000":"rm"}}',
    "nested duplicate in arguments": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
    b'{"name":"add","arguments":{"q":{"a":{"b":{"path":"/ok","path":"/etc/shadow"}}}}}}',
    "duplicate method": b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call",'
    b'"params":{"name":"rm"}}',
    "non-UTF-8 body": b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add\xff"}}',
    "lone surrogate escape": b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    b'"params":{"name":"add\\ud800"}}',
    "BOM": b"\xef\xbb\xbf" + CALL_ADD,
}


@pytest.mark.parametrize("name", DIFFERENTIALS)
def test_parser_differential_is_refused(name):
    verdict = judge(DIFFERENTIALS[name])
    assert verdict.decision.status == 400
    assert error_of(verdict)["error"]["code"] in (-32700, -32600)
    assert judge(CALL_ADD).allowed  # the legitimate twin passes


def test_deep_argument_keys_that_merely_look_like_protocol_keys_pass():
    payload = req("tools/call", {"name": "add", "arguments": {"ID": 3, "Name": "x"}})
    assert judge(payload).allowed


# --- batches (notes §5.3) -----------------------------------------------------------------------


def test_batch_hiding_a_denied_call_is_refused_whole():
    batch = [
        req("tools/list", id_=1),
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        req("tools/call", {"name": "rm"}, id_=2),
    ]
    verdict = judge(batch)
    assert verdict.decision.status == 403 and verdict.is_batch
    assert error_of(verdict) == [
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32003, "message": "batch refused: element 2 "
         "was refused (tool 'rm' is not granted to caller 'analyst-agent')"}},
        {"jsonrpc": "2.0", "id": 2, "error": {"code": -32003,
         "message": "tool 'rm' is not granted to caller 'analyst-agent'"}},
    ]  # fmt: skip
    assert verdict.pending == ()


def test_legitimate_batch_under_2025_03_26():
    batch = [req("tools/list", id_=1), req("tools/call", {"name": "add"}, id_=2)]
    for version in (None, "2025-03-26"):
        verdict = judge(batch, version=version)
        assert verdict.allowed and verdict.request_ids == (1, 2)
        assert [p.request_id for p in verdict.pending] == [1]


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", "2026-07-28"])
def test_batch_under_later_versions_is_refused(version):
    verdict = judge([req("tools/call", {"name": "add"})], version=version)
    assert verdict.decision.status == 400
    assert error_of(verdict) == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600,
        "message": f"JSON-RPC batches are not allowed in protocol version {version}"}}  # fmt: skip


def test_batch_version_from_header_and_empty_batch():
    assert (
        judge([req("ping")], headers={"mcp-protocol-version": "2025-06-18"}).decision.status == 400
    )
    assert judge([]).decision.status == 400
    dup = [req("tools/list", id_=1), req("ping", id_=1)]
    assert judge(dup).decision.message == "a JSON-RPC batch must not repeat a request id"


def test_malformed_element_makes_the_batch_400():
    verdict = judge([req("ping"), {"jsonrpc": "2.0", "id": 2, "method": 3}])
    assert verdict.decision.status == 400


# --- 2026-07-28 mirrored headers (notes §5.7) ---------------------------------------------------

V26 = "2026-07-28"


def h(method, name=None, **extra):
    headers = {"mcp-method": method, **extra}
    if name is not None:
        headers["mcp-name"] = name
    return headers


def test_matching_headers_pass():
    assert judge(
        req("tools/call", {"name": "add"}), headers=h("tools/call", "add"), version=V26
    ).allowed
    assert judge(req("resources/read", {"uri": "file:///ok.txt"}),
                 headers=h("resources/read", "file:///ok.txt"), version=V26).allowed  # fmt: skip
    assert judge(req("tools/list"), headers=h("tools/list"), version=V26).allowed


@pytest.mark.parametrize(
    ("message", "headers", "text"),
    [
        (req("tools/call", {"name": "rm"}), h("tools/call", "add"),
         "Header mismatch: Mcp-Name header value 'add' does not match body value 'rm'"),
        (req("tools/call", {"name": "add"}), h("tools/list", "add"),
         "Header mismatch: Mcp-Method header value 'tools/list' does not match body value "
         "'tools/call'"),
        (req("tools/call", {"name": "add"}), {},
         "Header mismatch: required header Mcp-Method is missing"),
        (req("tools/call", {"name": "add"}), h("tools/call"),
         "Header mismatch: required header Mcp-Name is missing for tools/call"),
        (req("tools/list"), h("tools/list", "add"),
         "Header mismatch: Mcp-Name is not expected for 'tools/list'"),
        (req("tools/call", {"name": "add"}), h("tools/call", "=?base64?!!?="),
         "Header mismatch: Mcp-Name has an invalid base64 value"),
        (req("tools/call", {"name": "add"}), h("tools/call", "ädd"),
         "Header mismatch: Mcp-Name contains characters not allowed in a header"),
        (req("tools/call", {"name": "add", "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2025-11-25"}}),
         h("tools/call", "add", **{"mcp-protocol-version": V26}),
         "Header mismatch: MCP-Protocol-Version header does not match "
         "_meta['io.modelcontextprotocol/protocolVersion']"),
    ],
)  # fmt: skip
def test_header_mismatch_is_400_32020(message, headers, text):
    verdict = judge(message, headers=headers, version=V26)
    assert verdict.decision.status == 400
    assert error_of(verdict) == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32020, "message": text},
    }


def test_header_present_is_checked_under_older_versions_too():
    verdict = judge(req("tools/call", {"name": "rm"}), headers=h("tools/call", "add"))
    assert error_of(verdict)["error"]["code"] == -32020
    assert judge(req("tools/call", {"name": "add"})).allowed  # absent: fine before 2026-07-28


def test_base64_sentinel_is_decoded():
    name = "wörld tool"
    encoded = "=?base64?" + base64.b64encode(name.encode()).decode() + "?="
    policy_name = req("tools/call", {"name": name})
    verdict = judge(policy_name, headers=h("tools/call", encoded), version=V26)
    assert verdict.decision.reason == "tool_not_granted"  # header fine; decided on the body
    add = "=?base64?" + base64.b64encode(b"add").decode() + "?="
    assert judge(
        req("tools/call", {"name": "add"}), headers=h("tools/call", add), version=V26
    ).allowed
    # The sentinel is case-sensitive: an upper-case prefix is just a plain (mismatching) value.
    upper = "=?BASE64?" + base64.b64encode(b"add").decode() + "?="
    verdict = judge(req("tools/call", {"name": "add"}), headers=h("tools/call", upper), version=V26)
    assert error_of(verdict)["error"]["code"] == -32020


def test_decision_is_made_on_the_body_not_the_header():
    verdict = judge(req("tools/call", {"name": "rm"}), headers=h("tools/call", "rm"), version=V26)
    assert verdict.decision.status == 403


def test_2026_specifics():
    assert judge(req("server/discover", {}), headers=h("server/discover"), version=V26).allowed
    listen = req(
        "subscriptions/listen", {"notifications": {"resourceSubscriptions": ["file:///x"]}}
    )
    verdict = judge(listen, headers=h("subscriptions/listen"), version=V26)
    assert verdict.decision.reason == "resource_not_granted"
    listen["params"]["notifications"]["resourceSubscriptions"] = ["file:///ok.txt"]
    assert judge(listen, headers=h("subscriptions/listen"), version=V26).allowed
    response = {"jsonrpc": "2.0", "id": 5, "result": {}}
    assert judge(response, version=V26).decision.status == 400  # clients MUST NOT send responses
    assert judge(req("ping"), headers=h("ping"), version=V26).decision.status == 403


def test_malformed_version_is_400():
    assert judge(req("ping"), version="latest").decision.status == 400
