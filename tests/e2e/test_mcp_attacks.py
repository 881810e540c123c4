"""Known MCP-gateway bypasses (notes §5), replayed as raw HTTP through two real sidecars.

Each request goes to the caller's outbound URL, crosses the mTLS hop, and is judged by the
server's sidecar. Behind it runs ``mcp_logging_server``: the official SDK's ``MCPServer`` wrapped
so that every raw body that reaches it is written down first. So each test shows three things:
the attack gets the sidecar's refusal, the legitimate request beside it gets the server's answer,
and the server's own log holds the legitimate body and never the attack. The caller
``mcp-client`` may use ``add`` and ``echo``; ``get_weather_alert`` would answer "the denied tool
ran" if it ever ran.
"""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests._support.mcp_mesh import CLIENT_ID, invoke_url

pytestmark = pytest.mark.e2e

SERVER_ID = "mcp-server"
LIMIT = 4 * 1024 * 1024  # the inbound sidecar's inspected-body limit
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
}


class Wire:
    def __init__(self, url: str, log, procs) -> None:
        self.url, self.log, self.procs = url, log, procs
        self.http = httpx.Client(timeout=15)

    def post(self, body: bytes, version: str | None = "2025-06-18", **headers: str):
        sent = dict(ACCEPT)
        if version is not None:
            sent["mcp-protocol-version"] = version
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        return self.http.post(self.url, content=body, headers=sent)


@pytest.fixture(scope="module")
def wire(mcp_mesh):
    server, log = mcp_mesh.logging_server("logging-server", mode="json", stateless=True)
    mcp_mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
    client = mcp_mesh.sidecar(CLIENT_ID)
    mcp_mesh.tm("mcpserver", "create", SERVER_ID)
    mcp_mesh.grant(SERVER_ID, CLIENT_ID, "add,echo")
    wire = Wire(invoke_url(client, SERVER_ID), log, mcp_mesh.procs)
    yield wire
    wire.http.close()


@pytest.fixture(autouse=True)
def nothing_died_and_the_denied_tool_never_ran(wire):
    yield
    assert [p.name for p in wire.procs.procs if p.popen.poll() is not None] == []
    assert not [b for b in wire.log.bodies() if b"get_weather_alert" in b]


def call(id_, name: str, arguments: dict, *, modern: bool = False) -> dict:
    params = {"name": name, "arguments": arguments}
    if modern:
        params["_meta"] = MODERN_META
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}


def encode(message) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def refused(response: httpx.Response, status: int, code: int, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code, error
    for fragment in fragments:
        assert fragment in error["message"], error
    return error


def ran(response: httpx.Response, text: str) -> None:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is False and result["content"][0]["text"] == text, result


def assert_server_saw(wire: Wire, *, legit: list[bytes], attacks: list[bytes]) -> None:
    bodies = wire.log.bodies()
    for body in legit:
        assert body in bodies, body[:200]
    for body in attacks:
        assert body not in bodies, body[:200]


# --- control: the plain denied call -----------------------------------------------------------


def test_plain_denied_call_is_refused_and_granted_call_runs(wire):
    attack = encode(call("plain-1", "get_weather_alert", {"city": "Paris"}))
    legit = encode(call("plain-2", "add", {"a": 2, "b": 3}))
    error = refused(wire.post(attack), 403, -32003, "'get_weather_alert'", f"'{CLIENT_ID}'")
    assert wire.post(attack).json()["id"] == "plain-1"
    assert error["message"] == f"tool 'get_weather_alert' is not granted to caller '{CLIENT_ID}'"
    ran(wire.post(legit), "5")
    assert_server_saw(wire, legit=[legit], attacks=[attack])


# --- parser differentials (notes §5.1, §5.2) --------------------------------------------------

ADD_ARGS = '"arguments":{"a":1,"b":2,"city":"Paris"}'


def raw_call(id_: str, params_members: str) -> bytes:
    return (
        f'{{"jsonrpc":"2.0","id":"{id_}","method":"tools/call","params":{{{params_members}}}}}'
    ).encode()


PARSER_ATTACKS = {
    # JSON parameter pollution: Python's json and pydantic keep the last value.
    "duplicate-name": (
        raw_call("dup", f'"name":"add","name":"get_weather_alert",{ADD_ARGS}'),
        "duplicate key 'name'",
    ),
    "duplicate-name-reversed": (
        raw_call("dup-r", f'"name":"get_weather_alert","name":"add",{ADD_ARGS}'),
        "duplicate key 'name'",
    ),
    # go-sdk GHSA-wvj2-96wp-fq3f: a case-insensitive decoder reads "Name" as name.
    "Name-beside-name": (
        raw_call("case", f'"name":"add","Name":"get_weather_alert",{ADD_ARGS}'),
        "differ only by case",
    ),
    # go-sdk GHSA-q382-vc8q-7jhj: a key with a trailing NUL read as the base key.
    "trailing-NUL-key": (
        raw_call("nul", f'"name":"add","name\\u0000":"get_weather_alert",{ADD_ARGS}'),
        "imitates the protocol key 'name'",
    ),
    # Go folds U+017F (long s) to "s": a second "params" the server's decoder may prefer.
    "long-s-params": (
        b'{"jsonrpc":"2.0","id":"fold","method":"tools/call","params":{"name":"add",'
        + ADD_ARGS.encode()
        + b'},"param\\u017f":{"name":"get_weather_alert","arguments":{"city":"Paris"}}}',
        "differ only by case",
    ),
}
ENVELOPE_ATTACKS = {
    "Name-alone": (
        raw_call("case-only", f'"Name":"get_weather_alert",{ADD_ARGS}'),
        "imitates the protocol member params.'name'",
    ),
    "NUL-name-alone": (
        raw_call("nul-only", f'"name\\u0000":"get_weather_alert",{ADD_ARGS}'),
        "imitates the protocol key 'name'",
    ),
}


@pytest.mark.parametrize("attack_name", sorted(PARSER_ATTACKS))
def test_parser_differential_keys_are_refused(wire, attack_name):
    attack, why = PARSER_ATTACKS[attack_name]
    legit = raw_call(f"{attack_name}-ok", f'"name":"add",{ADD_ARGS}')
    refused(wire.post(attack), 400, -32700, why)
    ran(wire.post(legit), "3")
    assert_server_saw(wire, legit=[legit], attacks=[attack])


@pytest.mark.parametrize("attack_name", sorted(ENVELOPE_ATTACKS))
def test_look_alike_keys_without_the_real_one_are_refused(wire, attack_name):
    attack, why = ENVELOPE_ATTACKS[attack_name]
    legit = raw_call(f"{attack_name}-ok", f'"name":"add",{ADD_ARGS}')
    response = wire.post(attack)
    assert response.status_code == 400
    assert why in response.json()["error"]["message"]
    ran(wire.post(legit), "3")
    assert_server_saw(wire, legit=[legit], attacks=[attack])


# --- batch smuggling (notes §5.3) -------------------------------------------------------------


@pytest.mark.parametrize("version", ["2025-03-26", None], ids=["2025-03-26", "no-version-header"])
def test_batch_hiding_a_denied_call_is_refused_whole_under_2025_03_26(wire, version):
    tag = version or "default"
    attack = encode(
        [
            call(f"b-{tag}-1", "add", {"a": 1, "b": 1}),
            call(f"b-{tag}-2", "get_weather_alert", {"city": "Paris"}),
        ]
    )
    response = wire.post(attack, version=version)
    assert response.status_code == 403
    errors = response.json()
    assert [e["id"] for e in errors] == [f"b-{tag}-1", f"b-{tag}-2"]
    assert errors[1]["error"]["code"] == -32003
    assert "'get_weather_alert'" in errors[1]["error"]["message"]
    assert "batch refused: element 1" in errors[0]["error"]["message"]
    # The same batch without the denied call passes the sidecar and reaches the server, which
    # answers for itself (this SDK no longer takes batches): the sidecar did not stand in.
    legit = encode(
        [
            call(f"b-{tag}-3", "add", {"a": 1, "b": 1}),
            call(f"b-{tag}-4", "echo", {"message": "hi"}),
        ]
    )
    passed = wire.post(legit, version=version)
    assert passed.status_code == 400 and "Validation error" in passed.json()["error"]["message"]
    assert_server_saw(wire, legit=[legit], attacks=[attack])


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25", "2026-07-28"])
def test_batches_are_refused_from_2025_06_18_on(wire, version):
    modern = version == "2026-07-28"
    attack = encode(
        [
            call(f"b6-{version}-1", "add", {"a": 1, "b": 1}, modern=modern),
            call(f"b6-{version}-2", "get_weather_alert", {"city": "Paris"}, modern=modern),
        ]
    )
    harmless = encode([call(f"b6-{version}-3", "add", {"a": 1, "b": 1}, modern=modern)])
    refused(wire.post(attack, version=version), 400, -32600, "batches are not allowed")
    refused(wire.post(harmless, version=version), 400, -32600, "batches are not allowed")
    legit = encode(call(f"b6-{version}-4", "add", {"a": 1, "b": 1}, modern=modern))
    headers = {"mcp_method": "tools/call", "mcp_name": "add"} if modern else {}
    ran(wire.post(legit, version=version, **headers), "2")
    assert_server_saw(wire, legit=[legit], attacks=[attack, harmless])


# --- 2026-07-28 mirrored headers (notes §4.3, §5.7) -------------------------------------------


MISMATCHES = {
    # "a load balancer routes on the header, the server executes the body"
    "Mcp-Name-says-add": (
        {"mcp_method": "tools/call", "mcp_name": "add"},
        "get_weather_alert",
        "Mcp-Name header value 'add' does not match body value 'get_weather_alert'",
    ),
    "Mcp-Method-says-tools/list": (
        {"mcp_method": "tools/list"},
        "get_weather_alert",
        "Mcp-Method header value 'tools/list' does not match body value 'tools/call'",
    ),
    "Mcp-Name-base64-of-add": (
        {"mcp_method": "tools/call", "mcp_name": "=?base64?YWRk?="},
        "get_weather_alert",
        "Mcp-Name header value 'add' does not match",
    ),
    "Mcp-Name-missing": (
        {"mcp_method": "tools/call"},
        "add",
        "required header Mcp-Name is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_2026_header_body_mismatch_is_400_with_32020(wire, case):
    headers, body_tool, why = MISMATCHES[case]
    arguments = {"a": 4, "b": 5, "city": "Paris"} if body_tool == "add" else {"city": "Paris"}
    attack = encode(call(f"mm-{case}", body_tool, arguments, modern=True))
    refused(wire.post(attack, version="2026-07-28", **headers), 400, -32020, why)
    legit = encode(call(f"mm-{case}-ok", "add", {"a": 4, "b": 5}, modern=True))
    ran(wire.post(legit, version="2026-07-28", mcp_method="tools/call", mcp_name="add"), "9")
    assert_server_saw(wire, legit=[legit], attacks=[attack])


# --- bodies the sidecar would have to decode or cannot hold (notes §5.8) ----------------------


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "deflate", "identity, gzip"])
def test_content_encoded_body_is_refused(wire, encoding):
    inner = encode(call(f"gz-{encoding}", "get_weather_alert", {"city": "Paris"}))
    attack = gzip.compress(inner)
    refused(
        wire.post(attack, content_encoding=encoding), 400, -32600, "Content-Encoding", "plain JSON"
    )
    legit = encode(call(f"gz-{encoding}-ok", "add", {"a": 1, "b": 2}))
    ran(wire.post(legit, content_encoding="identity"), "3")
    assert_server_saw(wire, legit=[legit], attacks=[attack, inner])


def test_unknown_methods_are_403_naming_the_method(wire):
    attacks = []
    for method in ("tools/execute", "Tools/Call", "tools/call ", "admin/shutdown"):
        body = encode({"jsonrpc": "2.0", "id": f"um-{method}", "method": method, "params": {}})
        error = refused(wire.post(body), 403, -32601, repr(method))
        assert error["message"] == f"method {method!r} is not defined by MCP"
        attacks.append(body)
    legit = encode({"jsonrpc": "2.0", "id": "um-ok", "method": "tools/list", "params": {}})
    listed = wire.post(legit)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()["result"]["tools"]] == ["add", "echo"]
    assert_server_saw(wire, legit=[legit], attacks=attacks)


def test_body_over_the_limit_is_413(wire):
    head = encode(call("big", "echo", {"message": ""}))[:-4]  # ..."message":"  then pad
    attack = head + b"x" * (LIMIT + 1 - len(head) - 4) + b'"}}}'
    assert len(attack) == LIMIT + 1 and json.loads(attack)["id"] == "big"
    response = wire.post(attack)
    assert response.status_code == 413
    assert response.json()["errorCode"] == "ERR_BODY_TOO_LARGE"
    legit_message = "y" * (256 * 1024)
    legit = encode(call("big-ok", "echo", {"message": legit_message}))
    ran(wire.post(legit), legit_message)
    assert_server_saw(wire, legit=[legit], attacks=[attack])


# --- messages that look harmless to a naive guard ---------------------------------------------


def test_tools_call_without_id_is_not_a_notification(wire):
    attack = encode(
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "get_weather_alert"}}
    )
    refused(wire.post(attack), 400, -32600, "'tools/call' is a request and needs an id")
    legit = encode({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {}})
    assert wire.post(legit).status_code == 202
    assert_server_saw(wire, legit=[legit], attacks=[attack])


@pytest.mark.parametrize("verb", ["PUT", "PATCH"])
def test_a_tool_call_under_another_http_method_is_refused(wire, verb):
    """Only POST bodies are inspected, so no other method may carry one to the endpoint."""
    attack = encode(call("smuggled-1", "get_weather_alert", {"city": "x"}))
    response = wire.http.request(verb, wire.url, content=attack, headers=ACCEPT)
    refused(response, 405, -32600, verb)
    ran(wire.post(encode(call("legit-put", "add", {"a": 2, "b": 3}))), "5")


def test_a_get_with_a_body_is_refused(wire):
    attack = encode(call("smuggled-2", "get_weather_alert", {"city": "x"}))
    headers = {**ACCEPT, "mcp-protocol-version": "2025-06-18"}
    response = wire.http.request("GET", wire.url, content=attack, headers=headers)
    # Refused before any policy, on every path: a GET never carries content to an app.
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "ERR_BODY_NOT_ALLOWED"
    assert "must not carry a body" in response.json()["message"]
    ran(wire.post(encode(call("legit-get", "add", {"a": 1, "b": 1}))), "2")
