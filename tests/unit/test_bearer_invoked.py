"""RFC 9728 without a configured ``resource``: the URL the caller used, stated by its sidecar."""

from __future__ import annotations

import pytest

from sidecar.bearer import (
    INVOKED_AS_HEADERS,
    invoked_as_headers,
    invoked_base,
    resource_derivation_warning,
    resource_for,
    resource_metadata_url_for,
)
from tests._support.bearer import make_config

INVOKE = b"/v1.0/invoke/mcp-api/method/mcp"
STATED = {
    "x-forwarded-proto": "http",
    "x-forwarded-host": "127.0.0.1:3500",
    "x-forwarded-prefix": "/v1.0/invoke/mcp-api/method",
}


def as_map(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {n.decode(): v.decode() for n, v in headers}


def test_the_calling_sidecar_states_host_and_invocation_prefix():
    stated = invoked_as_headers(INVOKE + b"?x=1", [(b"host", b"127.0.0.1:3500")])
    assert as_map(stated) == STATED
    assert {n for n, _ in stated} == INVOKED_AS_HEADERS


@pytest.mark.parametrize(
    ("target", "headers", "prefix"),
    [
        (b"//v1.0//invoke/mcp-api.default/method/mcp", [], "//v1.0//invoke/mcp-api.default/method"),
        (b"/mcp", [(b"dapr-app-id", b"mcp-api")], ""),  # the header form: the path is the method
        (b"/v1.0/invoke/mcp-api/method", [], "/v1.0/invoke/mcp-api/method"),
    ],
)
def test_the_prefix_is_the_path_as_the_app_wrote_it(target, headers, prefix):
    stated = as_map(invoked_as_headers(target, [(b"host", b"localhost:3500"), *headers]))
    assert stated["x-forwarded-prefix"] == prefix


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        (INVOKE, []),  # no Host
        (INVOKE, [(b"host", b"a:1"), (b"host", b"b:2")]),  # two
        (b"/v1.0/invoke/mcp-api/methodical/mcp", [(b"host", b"127.0.0.1:3500")]),
        (b"/somewhere/else", [(b"host", b"127.0.0.1:3500")]),
    ],
)
def test_nothing_is_stated_when_the_address_is_unclear(target, headers):
    assert invoked_as_headers(target, headers) == []


def test_the_callee_reads_back_the_base():
    assert invoked_base(STATED) == "http://127.0.0.1:3500/v1.0/invoke/mcp-api/method"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-forwarded-host", "127.0.0.1:3500, evil.example"),  # sent twice, joined
        ("x-forwarded-host", "evil.example"),  # plain http to a host that is not loopback
        ("x-forwarded-host", "127.0.0.1:3500/x"),
        ("x-forwarded-host", 'a"b'),
        ("x-forwarded-prefix", "/v1.0/invoke/x/method?q"),
        ("x-forwarded-prefix", "/a b"),
        ("x-forwarded-prefix", "no-leading-slash"),
        ("x-forwarded-proto", "gopher"),
    ],
)
def test_a_statement_that_is_not_well_formed_derives_nothing(name, value):
    assert invoked_base({**STATED, name: value}) is None


def test_an_mcp_server_without_resource_derives_resource_and_metadata_url_from_the_caller():
    config = make_config(audience="mesh-api")
    assert resource_for(config, "mcp", STATED) == (
        "http://127.0.0.1:3500/v1.0/invoke/mcp-api/method/mcp"
    )
    assert resource_metadata_url_for(config, "mcp", STATED) == (
        "http://127.0.0.1:3500/v1.0/invoke/mcp-api/method/.well-known/oauth-protected-resource/mcp"
    )
    assert resource_derivation_warning(config, "mcp") is None


def test_configured_values_win_over_derived_ones():
    config = make_config(audience="mesh-api", resource="https://mcp.example.test/mcp")
    assert resource_for(config, "mcp", STATED) == "https://mcp.example.test/mcp"
    assert resource_metadata_url_for(config, "mcp", STATED) == (
        "https://mcp.example.test/.well-known/oauth-protected-resource/mcp"
    )
    url_audience = make_config(audience="https://api.example.test/mcp")
    assert resource_for(url_audience, "mcp", STATED) == "https://api.example.test/mcp"


def test_without_an_mcp_endpoint_nothing_is_derived_and_the_load_warns():
    config = make_config(audience="mesh-api")
    assert resource_for(config, None, STATED) is None
    assert resource_metadata_url_for(config, None, STATED) is None
    warning = resource_derivation_warning(config, None)
    assert warning is not None and "set 'resource'" in warning and "'bearer'" in warning
    assert resource_derivation_warning(make_config(resource="https://a.test/x"), None) is None
