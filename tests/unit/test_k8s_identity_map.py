"""The SPIFFE ID → App ID map: defaults, bindings, exclusivity, and the reverse direction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity import (
    AppIdentity,
    IdentityBinding,
    IdentityMap,
    IdentityMapError,
    NotAnAppIdentity,
    SpiffeId,
    parse_binding,
)

RUNNER = SpiffeId.parse("spiffe://example.org/ns/agents/sa/runner")
CUSTOM = SpiffeId.parse("spiffe://example.org/k8s/prod/pod/abc")
MAP = IdentityMap(
    [
        IdentityBinding(RUNNER, "agents", "research-agent"),
        IdentityBinding(CUSTOM, "default", "legacy"),
    ]
)


@pytest.mark.parametrize(
    ("spiffe_id", "expected"),
    [
        ("spiffe://example.org/ns/default/mcp-server", ("default", "mcp-server")),
        ("spiffe://example.org/ns/tools/sa/mcp-server", ("tools", "mcp-server")),
        ("spiffe://example.org/ns/agents/sa/runner", ("agents", "research-agent")),
        ("spiffe://example.org/k8s/prod/pod/abc", ("default", "legacy")),
    ],
    ids=["dapr-form", "service-account-default", "bound-service-account", "bound-custom-path"],
)
def test_maps_to_namespace_and_app_id_keeping_the_spiffe_id(spiffe_id, expected) -> None:
    identity = MAP.app_identity(spiffe_id)
    assert (identity.namespace, identity.app_id) == expected
    assert str(identity) == spiffe_id
    assert str(identity.spiffe_id) == spiffe_id
    assert identity == AppIdentity("example.org", *expected)


@pytest.mark.parametrize(
    ("spiffe_id", "message"),
    [
        (
            "spiffe://example.org/ns/agents/sa/research-agent",
            "may not act as App ID 'research-agent' in namespace 'agents': that App ID is bound "
            "to spiffe://example.org/ns/agents/sa/runner",
        ),
        ("spiffe://example.org/ns/agents/research-agent", "that App ID is bound"),
        ("spiffe://example.org/ns/default/sa/my.service", "bind it with an AppIdentityBinding"),
        ("spiffe://example.org/ns/default/sa", None),  # 3 segments: the Dapr form, App ID "sa"
        ("spiffe://example.org/k8s/prod/pod/other", "is not an App ID"),
        ("spiffe://example.org/ns/default/xa/web", "is not an App ID"),
    ],
    ids=[
        "sa-squats-bound-app",
        "dapr-form-squats-bound-app",
        "dotted-sa-name",
        "ns-sa-is-dapr-form",
        "unbound-custom-path",
        "four-segments-not-sa",
    ],
)
def test_refusals_name_the_reason(spiffe_id, message) -> None:
    if message is None:
        assert MAP.app_identity(spiffe_id).app_id == "sa"
        return
    with pytest.raises(NotAnAppIdentity, match=message.replace(".", r"\.")):
        MAP.app_identity(spiffe_id)


def test_reverse_is_the_binding_alone_or_both_default_forms() -> None:
    assert MAP.spiffe_ids_for(AppIdentity("example.org", "agents", "research-agent")) == (RUNNER,)
    assert [str(s) for s in MAP.spiffe_ids_for(AppIdentity("example.org", "default", "web"))] == [
        "spiffe://example.org/ns/default/web",
        "spiffe://example.org/ns/default/sa/web",
    ]
    other_domain = AppIdentity("other.org", "agents", "research-agent")
    assert RUNNER not in MAP.spiffe_ids_for(other_domain)


def test_contradicting_bindings_are_refused() -> None:
    with pytest.raises(IdentityMapError, match="bound twice"):
        IdentityMap(
            [IdentityBinding(RUNNER, "agents", "a"), IdentityBinding(RUNNER, "agents", "b")]
        )
    other = SpiffeId.parse("spiffe://example.org/ns/agents/sa/other")
    with pytest.raises(IdentityMapError, match="one SPIFFE ID per App ID"):
        IdentityMap([IdentityBinding(RUNNER, "agents", "a"), IdentityBinding(other, "agents", "a")])


def test_binding_document_defaults_namespace_from_the_spiffe_id() -> None:
    doc = {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "AppIdentityBinding",
        "metadata": {"name": "runner"},
        "spec": {"spiffeID": str(RUNNER), "appID": "research-agent"},
    }
    assert parse_binding(doc) == IdentityBinding(RUNNER, "agents", "research-agent")
    with pytest.raises(IdentityMapError, match="unknown field"):
        parse_binding({**doc, "spec": {**doc["spec"], "appId": "x"}})
    with pytest.raises(IdentityMapError, match=r"spec\.spiffeID"):
        parse_binding({**doc, "spec": {"spiffeID": "spiffe://x/a?b", "appID": "a"}})


segment = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@given(namespace=segment, app_id=segment, bound=st.booleans())
def test_every_id_the_map_derives_for_an_app_maps_back_to_it(namespace, app_id, bound) -> None:
    app = AppIdentity("example.org", namespace, app_id)
    bindings = [IdentityBinding(CUSTOM, namespace, app_id)] if bound else []
    identity_map = IdentityMap(bindings)
    derived = identity_map.spiffe_ids_for(app)
    assert all(identity_map.app_identity(sid) == app for sid in derived)
    for form in (("ns", namespace, app_id), ("ns", namespace, "sa", app_id)):
        sid = SpiffeId.from_parts("example.org", *form)
        if sid in derived:
            continue
        with pytest.raises(NotAnAppIdentity):
            identity_map.app_identity(sid)
