"""A server's ``notifications/resources/updated`` reaches a caller only for a URI it may read.

The sidecar gates ``resources/subscribe`` like ``resources/read``, but the server decides what
it announces: some announce every update on every stream, and a subscription outlives a grant
revoked after it. The content backstop (the check every response message passes) drops the
others, under the policy in force when the message passes.
"""

from __future__ import annotations

import json

import pytest

from sidecar.mcp import filter_response_body, parse_policy
from sidecar.mcp.errors import ResponseFilterFailed
from sidecar.mcp.filtering import DROP, list_backstop
from tests._support.mcp_policies import CALLER, DOC, POLICY, body


def updated(uri=None, **params) -> dict:
    if uri is not None:
        params["uri"] = uri
    return {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": params}


def test_an_update_about_a_granted_uri_passes():
    assert list_backstop(CALLER, POLICY)(updated("file:///ok.txt")) is None


@pytest.mark.parametrize(
    "message",
    [
        updated("file:///secret.txt"),
        updated("file:///OK.txt"),  # URIs compare exactly, as reads do
        updated("db://users"),  # a granted template does not grant the URIs it expands to
        updated(),  # no uri: the caller cannot be shown to hold it
        updated(12),
        {"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": "x"},
        {"jsonrpc": "2.0", "method": "notifications/resources/updated"},
    ],
)
def test_an_update_the_caller_may_not_read_is_dropped(message):
    assert list_backstop(CALLER, POLICY)(message) is DROP


def test_a_caller_without_resource_grants_gets_no_updates():
    assert list_backstop("nobody", POLICY)(updated("file:///ok.txt")) is DROP


def test_a_wildcard_resource_grant_gets_every_update():
    doc = {**DOC, "spec": {**DOC["spec"], "rules": [
        {"callers": [{"appID": CALLER}], "grants": [{"capability": "resources", "names": ["*"]}]},
    ]}}  # fmt: skip
    assert list_backstop(CALLER, parse_policy(doc))(updated("file:///anything")) is None


@pytest.mark.parametrize(
    "message",
    [
        {"jsonrpc": "2.0", "method": "notifications/resources/list_changed"},
        {"jsonrpc": "2.0", "method": "notifications/message", "params": {"uri": "file:///x"}},
        {"jsonrpc": "2.0", "id": "s1", "method": "sampling/createMessage", "params": {}},
    ],
)
def test_other_server_messages_are_not_its_business(message):
    assert list_backstop(CALLER, POLICY)(message) is None


def test_a_json_batch_loses_only_the_update_it_may_not_see():
    secret, ok = updated("file:///secret.txt"), updated("file:///ok.txt")
    answer = {"jsonrpc": "2.0", "id": 3, "result": {}}
    out = filter_response_body(
        body([secret, answer, ok]), [], backstop=list_backstop(CALLER, POLICY)
    )
    assert b"secret" not in out
    assert json.loads(out) == [answer, ok]


def test_a_json_body_that_is_a_hidden_update_is_withheld():
    with pytest.raises(ResponseFilterFailed, match="resource update"):
        filter_response_body(
            body(updated("file:///secret.txt")), [], backstop=list_backstop(CALLER, POLICY)
        )


def test_a_json_batch_of_hidden_updates_only_is_withheld_not_emptied():
    # An empty array is no JSON-RPC answer (a client may wait on it or fail on it).
    with pytest.raises(ResponseFilterFailed, match="only updates"):
        filter_response_body(
            body([updated("file:///secret.txt")]), [], backstop=list_backstop(CALLER, POLICY)
        )
    # The twin: one update it may read keeps the batch.
    ok = [updated("file:///ok.txt"), updated("file:///secret.txt")]
    out = filter_response_body(body(ok), [], backstop=list_backstop(CALLER, POLICY))
    assert json.loads(out) == [updated("file:///ok.txt")]
