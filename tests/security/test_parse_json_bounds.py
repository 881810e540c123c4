"""Parsing cost is bounded (#10.8): a body built to be expensive to parse is refused unparsed.

A 4 MiB body of ``[{},{},...]`` used to hold the sidecar's only thread for about a second while
its strict JSON reader ran a Python hook per object. Now the inbound sidecar counts the body's
structure first and refuses more than ``max_values`` values and keys with a 413 JSON-RPC parse
error that names the limit; the SDK server behind it (which logs every request it receives)
never sees the body. The legitimate twin, a tools/call just as large but shallow (one long string
full of commas, brackets and escaped quotes), is forwarded and answered. Through real sidecars on
127.0.0.1, with the official ``mcp`` SDK server.
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from sidecar.mcp.jsonstrict import DEFAULT_MAX_VALUES
from tests._support.mcp_mesh import CLIENT_ID, McpMesh, invoke_url
from tests.integration.conftest import Mesh

pytestmark = pytest.mark.e2e

SERVER_ID = "json-bounds-server"
LIMIT = 4 * 1024 * 1024  # the inbound sidecar's inspected-body limit
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}
PARSE_ERROR = -32700


def echo_call(id_: str, message: str) -> bytes:
    params = {"name": "echo", "arguments": {"message": message}}
    message_ = {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": params}
    return json.dumps(message_).encode()


def padded_call(id_: str, pad: bytes) -> bytes:
    """An ``echo`` call whose arguments carry ``pad`` (raw JSON), filled up to just under 4 MiB."""
    head = f'{{"jsonrpc":"2.0","id":"{id_}","method":"tools/call","params":{{"name":"echo",'
    head += '"arguments":{"message":"flood","pad":['
    tail = b"]}}}"
    count = (LIMIT - 64 - len(head) - len(tail)) // (len(pad) + 1)
    body = head.encode() + b",".join([pad] * count) + tail
    assert len(body) <= LIMIT
    return body


@pytest.fixture(scope="module")
def wire(tmp_path_factory, mesh_ca):
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("json-bounds"), mesh_ca))
    server, log = mesh.logging_server("logging-server", mode="json", stateless=True)
    mesh.sidecar(SERVER_ID, app_port=server.ready["port"])
    client = mesh.sidecar(CLIENT_ID)
    mesh.tm("mcpserver", "create", SERVER_ID)
    mesh.grant(SERVER_ID, CLIENT_ID, "echo")
    http = httpx.Client(timeout=30)
    yield http, invoke_url(client, SERVER_ID), log, mesh.procs
    http.close()
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


def refused_over_the_limit(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == PARSE_ERROR, error
    limit = DEFAULT_MAX_VALUES
    assert f"more than {limit} JSON values and keys (limit max_values={limit})" in error["message"]


def test_flood_of_empty_objects_is_refused_unparsed_and_never_reaches_the_server(wire):
    http, url, log, procs = wire
    flood = b"[" + b",".join([b"{}"] * ((LIMIT - 2) // 3)) + b"]"  # the review's 4 MiB body
    wrapped = padded_call("flood-1", b"{}")  # the same, inside a granted tools/call
    for body in (flood, wrapped):
        refused_over_the_limit(http.post(url, content=body, headers=HEADERS))
    assert not [b for b in log.bodies() if len(b) > 1024 * 1024]
    assert [p.name for p in procs.procs if p.popen.poll() is not None] == []


def test_flood_of_tiny_keyed_objects_and_strings_is_refused_too(wire):
    http, url, log, _ = wire
    for pad in (b'{"":0}', b'""', b'"\\\\"', b"0"):
        refused_over_the_limit(http.post(url, content=padded_call("flood-2", pad), headers=HEADERS))
    assert not [b for b in log.bodies() if b'"flood-2"' in b]


def test_twin_large_but_shallow_call_is_forwarded_and_answered(wire):
    http, url, log, _ = wire
    message = 'row,"quoted",[list],{obj}:\\ end\n' * 90_000  # 3 MiB of structure-like text
    body = echo_call("twin-1", message)
    assert 3 * 1024 * 1024 < len(body) <= LIMIT
    response = http.post(url, content=body, headers=HEADERS)
    assert response.status_code == 200, response.text[:500]
    result = response.json()["result"]
    assert result["isError"] is False and result["content"][0]["text"] == message
    assert log.received(body)


def test_a_caller_is_answered_while_floods_are_in_flight(wire):
    """No timing asserted (bench/json_flood.py measures that): the call completes, correctly,
    while four other connections keep sending floods, and every flood is refused."""
    http, url, log, _ = wire
    flood = padded_call("flood-3", b"{}")
    statuses: list[int] = []
    stop = threading.Event()

    def flooder() -> None:
        with httpx.Client(timeout=30) as own:
            while not stop.is_set():
                statuses.append(own.post(url, content=flood, headers=HEADERS).status_code)

    threads = [threading.Thread(target=flooder) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for i in range(5):
            response = http.post(url, content=echo_call(f"calm-{i}", f"calm {i}"), headers=HEADERS)
            assert response.json()["result"]["content"][0]["text"] == f"calm {i}"
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert statuses and set(statuses) == {413}
    assert not [b for b in log.bodies() if b'"flood-3"' in b]
