"""Name resolution modes: registry, ``--peers`` file, and DNS names from a template."""

from __future__ import annotations

import pytest

from sidecar.registry import DEFAULT_DNS_TEMPLATE, DnsNames, Registry, RegistryError, build_resolver


def test_default_template_is_daprs_kubernetes_service_name() -> None:
    names = DnsNames(DEFAULT_DNS_TEMPLATE, 50002)
    assert names.lookup("mcp-server", "tools") == (
        "mcp-server-dapr.tools.svc.cluster.local",
        50002,
    )


@pytest.mark.parametrize(
    ("app_id", "namespace"),
    [
        ("evil.com:443#", "default"),
        ("a.b", "default"),
        ("x", "attacker.example"),
        ("", "default"),
        ("a/b", "default"),
        ("a" * 65, "default"),
    ],
    ids=["host-injection", "dotted", "dotted-namespace", "empty", "slash", "too-long"],
)
def test_only_app_ids_ever_become_host_names(app_id, namespace) -> None:
    assert DnsNames(DEFAULT_DNS_TEMPLATE, 50002).lookup(app_id, namespace) is None


@pytest.mark.parametrize(
    ("template", "port", "message"),
    [
        ("{app_id}.{cluster}:{port}", 1, "not cluster"),
        ("static-host:{port}", 1, r"use \{app_id\}"),
        ("{app_id}-dapr.{namespace}.svc.cluster.local", 1, "expected host:port"),
        (DEFAULT_DNS_TEMPLATE, 0, "needs --inbound-port"),
        ("{app_id", 1, "invalid DNS template"),
    ],
    ids=["unknown-field", "no-app-id", "no-port", "port-zero", "unbalanced"],
)
def test_bad_templates_are_refused_at_start(template, port, message) -> None:
    with pytest.raises(RegistryError, match=message):
        DnsNames(template, port)


def test_explicit_port_in_template_needs_no_inbound_port() -> None:
    assert DnsNames("{app_id}.mesh.internal:8443", 0).lookup("a", "default") == (
        "a.mesh.internal",
        8443,
    )


def test_build_resolver_modes(tmp_path) -> None:
    registry = Registry(tmp_path)
    peers = tmp_path / "peers.yaml"
    peers.write_text("server: 10.0.0.2:4000\nserver.tools: 10.0.0.3:4000\n")
    by_file = build_resolver("peers", registry, default_namespace="default", peers=peers)
    assert by_file("server", "default") == ("10.0.0.2", 4000)
    assert by_file("server", "tools") == ("10.0.0.3", 4000)
    assert build_resolver("registry", registry, default_namespace="default")("x", "y") is None
    by_dns = build_resolver("dns", registry, default_namespace="default", port=3501)
    assert by_dns("web", "default") == ("web-dapr.default.svc.cluster.local", 3501)
    with pytest.raises(RegistryError, match="needs --peers"):
        build_resolver("peers", registry, default_namespace="default")
