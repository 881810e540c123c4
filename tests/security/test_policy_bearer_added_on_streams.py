"""A bearer layer added while streams are open: the streams without a token end, the others go on.

The receiving sidecar judges every exchange under way again when a new policy is applied. When
the new policy attaches a bearer component, a stream opened without a token must stop: a new
request without one is refused 401. A stream opened with a valid token must go on, as a new
request with it is forwarded. The new component's keys are fetched in the background once
the policy is built; the exchanges were judged again before that fetch had even started, so
every stream was cut for "keys unavailable", valid token or not. The keys of a new bearer
component are now fetched (first attempt, bounded by its fetch timeout) before the policy
that needs them is put in force.

Through real sidecars: the caller's outbound-only sidecar ``client``, mutual TLS, the
``server`` sidecar whose App ID moves from a Configuration without a bearer layer to one with
it, and an issuer this module serves on 127.0.0.1 (OIDC discovery, then its JWKS).
"""

from __future__ import annotations

import pytest

from tests._support.bearer_documents import bearer_component, bearer_configuration, bearer_mesh
from tests._support.gated_stream import INVOKE_GATED, open_gated_stream, rest_of_gated_stream
from tests._support.in_process import audit_path, last_record, new_policy_in_force
from tests._support.jose_mint import claims, sign
from tests.security.test_bearer_token_on_streams import _bearer, _connect, _release

pytestmark = pytest.mark.e2e

AUDIENCE = "mesh-api"
OPEN = {
    "apiVersion": "dapr.io/v1alpha1",
    "kind": "Configuration",
    "metadata": {"name": "open-config"},
    "spec": {"accessControl": {"defaultAction": "allow", "trustDomain": "public"}},
}


@pytest.fixture
def world(tmp_path, mesh_ca):
    def documents(issuer):
        component = bearer_component("bearer-guard", issuer, AUDIENCE)
        return [component, bearer_configuration("guard-config", "bearer-guard"), OPEN]

    with bearer_mesh(tmp_path, mesh_ca, AUDIENCE, documents, "open-config") as world:
        yield world


def _attach_bearer(world) -> None:
    """Move the server's App ID to the Configuration with the bearer layer and wait until its
    sidecar has it in force."""
    with new_policy_in_force(world["server"]):
        world["mesh"].tm("appid", "update", "server", "--app-config", "guard-config")


def _stream_across_bearer(world, headers: bytes) -> tuple[bytes, bool]:
    with _connect(world) as sock:
        try:
            open_gated_stream(sock, INVOKE_GATED, headers)
            _attach_bearer(world)
        finally:
            _release(world)
        return rest_of_gated_stream(sock, timeout=10)


def test_a_stream_opened_without_a_token_is_cut_when_a_bearer_layer_is_added(world):
    data, closed = _stream_across_bearer(world, b"")
    assert closed and b"data: second" not in data, data
    cut = last_record(audit_path(world["home"], "server"), "sse-gated")["cut"]
    assert cut.startswith("ERR_POLICY_CHANGED: the policy applied"), cut
    assert "keys" not in cut.lower(), cut  # refused for the missing token, not for the keys


def test_twin_a_stream_opened_with_a_valid_token_goes_on_when_a_bearer_layer_is_added(world):
    token = sign(world["key"], claims(world["issuer"], AUDIENCE, "alice", exp_in=300))
    data, closed = _stream_across_bearer(world, _bearer(token))
    assert b"data: second" in data and not closed, data
    assert last_record(audit_path(world["home"], "server"), "sse-gated")["cut"] is None
