"""What an app asks its sidecar for: Dapr's invocation forms and the outbound-port guard.

Addressing follows ``notes/dapr-compat.md`` §3.1 (``pkg/api/http/directmessaging.go``); the method
normalisation §1.7; the API token §3.3 and CVE-2023-37918 (GHSA-59m6-82qm-vqgj).
"""

from __future__ import annotations

import pytest

from sidecar.http.headers import get_header
from sidecar.http.invocation import (
    ApiTokenInvalid,
    InvocationError,
    OutboundForbidden,
    TargetNotFound,
    check_outbound_request,
    parse_app_address,
    parse_invocation,
)
from sidecar.http.path import InvalidPath

NS = "default"


def invoke(target: bytes, *headers: tuple[bytes, bytes]):
    return parse_invocation(target, get_header(list(headers), b"dapr-app-id"), NS)


# --- the URL form: /v1.0/invoke/<app>/method/<path> -------------------------------------------

URL_FORM = [
    # (target, app, namespace, method, wire path)
    (b"/v1.0/invoke/orders/method/neworder", "orders", NS, "neworder", b"/neworder"),
    (b"/v1.0/invoke/orders/method/api/v1/items", "orders", NS, "api/v1/items", b"/api/v1/items"),
    (b"/v1.0/invoke/orders.prod/method/x", "orders", "prod", "x", b"/x"),
    (b"/v1.0/invoke/orders/method/x?a=1&b=%zz", "orders", NS, "x", b"/x?a=1&b=%zz"),
    (b"/v1.0/invoke/orders/method/", "orders", NS, "", b"/"),
    (b"/v1.0/invoke/orders/method", "orders", NS, "", b"/"),
    (b"/v1.0/invoke/orders/method/a/method/b", "orders", NS, "a/method/b", b"/a/method/b"),
    # extra slashes in the prefix are tolerated (segment-wise match)
    (b"//v1.0//invoke//orders//method/x", "orders", NS, "x", b"/x"),
    # the app id is matched on the decoded path, as Go's r.URL.Path
    (b"/v1.0/invoke/ord%65rs/method/x", "orders", NS, "x", b"/x"),
    # '..'-laden methods resolve inside the app's root, once, before anything sees them
    (b"/v1.0/invoke/orders/method/admin/../public", "orders", NS, "public", b"/public"),
    (b"/v1.0/invoke/orders/method/admin%2F..%2Fpublic", "orders", NS, "public", b"/public"),
    (b"/v1.0/invoke/orders/method/../../etc/passwd", "orders", NS, "etc/passwd", b"/etc/passwd"),
    (b"/v1.0/invoke/orders/method/%2e%2e/%2e%2e/admin", "orders", NS, "admin", b"/admin"),
    (b"/v1.0/invoke/orders/method/..", "orders", NS, "", b"/"),
    (b"/v1.0/invoke/orders/method/a/./b//c/", "orders", NS, "a/b/c", b"/a/b/c"),
    (
        b"/v1.0/invoke/orders/method/admin%25stream",
        "orders",
        NS,
        "admin%stream",
        b"/admin%25stream",
    ),
]


@pytest.mark.parametrize(("target", "app", "namespace", "method", "wire"), URL_FORM)
def test_url_form(target, app, namespace, method, wire):
    invocation = invoke(target)
    assert (invocation.app_id, invocation.namespace) == (app, namespace)
    assert invocation.target.method == method
    assert invocation.target.wire_path == wire


@pytest.mark.parametrize(
    "target",
    [
        b"/v1.0/invoke/orders/method//admin",
        b"/v1.0/invoke/orders/method/%2Fadmin",
        b"/v1.0/invoke/orders/method/%2F%2Fadmin",
    ],
)
def test_url_form_extra_slash_after_method_is_not_kept(target):
    invocation = invoke(target)
    assert invocation.target.method == "admin"
    assert invocation.target.wire_path == b"/admin"


# --- the header form: dapr-app-id ---------------------------------------------------------------

HEADER_FORM = [
    # (target, header value, app, namespace, method, wire)
    (b"/mymethod", b"orders", "orders", NS, "mymethod", b"/mymethod"),
    (b"/", b"orders", "orders", NS, "", b"/"),
    (b"/admin/../public", b"orders", "orders", NS, "public", b"/public"),
    (b"/admin%2F..%2Fpublic", b"orders", "orders", NS, "public", b"/public"),
    (b"/a/b?q=1", b"orders.prod", "orders", "prod", "a/b", b"/a/b?q=1"),
    (b"//a//b", b"orders", "orders", NS, "a/b", b"/a/b"),
    (b"/x", b"  orders  ", "orders", NS, "x", b"/x"),
    # with the header, the whole path is the method, even one that looks like the URL form
    (b"/v1.0/invoke/other/method/x", b"orders", "orders", NS, "v1.0/invoke/other/method/x",
     b"/v1.0/invoke/other/method/x"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "header", "app", "namespace", "method", "wire"), HEADER_FORM)
def test_header_form(target, header, app, namespace, method, wire):
    invocation = invoke(target, (b"dapr-app-id", header))
    assert (invocation.app_id, invocation.namespace) == (app, namespace)
    assert invocation.target.method == method
    assert invocation.target.wire_path == wire


def test_header_wins_over_the_url_form():
    invocation = invoke(b"/v1.0/invoke/other/method/x", (b"dapr-app-id", b"orders"))
    assert invocation.app_id == "orders"


# --- errors -------------------------------------------------------------------------------------

NOT_FOUND = "failed getting app id either from the URL path or the header dapr-app-id"


@pytest.mark.parametrize(
    "target",
    [
        b"/",
        b"/neworder",
        b"/v1.0/invoke/orders",
        b"/v1.0/invoke/orders/",
        b"/v1.0/invoke/orders/methodx/y",
        b"/v1.0/invoke//method/x",
        b"/v1.1/invoke/orders/method/x",
        b"/v1.0/invoke/a%2Fb/method/x",  # the decoded '/' splits the app id
    ],
)
def test_missing_target_is_404_with_daprs_message(target):
    with pytest.raises(TargetNotFound) as caught:
        invoke(target)
    assert str(caught.value) == NOT_FOUND
    assert caught.value.http_status == 404
    assert caught.value.code == "ERR_DIRECT_INVOKE"


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("http://example.com", "external HTTP endpoints are not supported"),
        ("https://example.com", "external HTTP endpoints are not supported"),
        ("a.b.c", "at most one '.'"),
        ("a..b", "at most one '.'"),
        ("a.", "invalid app id"),
        (".ns", "invalid app id"),
        ("", "invalid app id"),
    ],
)
def test_bad_app_addresses(address, fragment):
    with pytest.raises(InvocationError) as caught:
        parse_app_address(address, NS)
    assert fragment in str(caught.value)
    assert caught.value.http_status == 400


def test_good_app_addresses():
    assert parse_app_address("orders", NS) == ("orders", NS)
    assert parse_app_address("orders.prod", NS) == ("orders", "prod")
    assert parse_app_address("Orders-1", "other") == ("Orders-1", "other")


def test_external_targets_refused_in_both_forms():
    assert invoke(b"/x", (b"dapr-app-id", b"orders")).app_id == "orders"
    with pytest.raises(InvocationError, match="external HTTP endpoints"):
        invoke(b"/x", (b"dapr-app-id", b"http://evil.example"))
    with pytest.raises(InvocationError, match="at most one"):
        invoke(b"/v1.0/invoke/a.b.c/method/x")


def test_non_ascii_app_id_header_refused():
    with pytest.raises(InvocationError, match="not ASCII"):
        invoke(b"/x", (b"dapr-app-id", "ordérs".encode()))


@pytest.mark.parametrize(
    "target",
    [
        b"/v1.0/invoke/orders/method/admin%3Fignored",
        b"/v1.0/invoke/orders/method/admin%00public",
        b"/v1.0/invoke/orders/method/public%23%2F..%2Fadmin",
        b"/v1.0/invoke/orders/method/admin%",
        b"/v1.0/invoke/orders/method/%ff",
    ],
)
def test_invalid_methods_refused_in_the_url_form(target):
    with pytest.raises(InvalidPath):
        invoke(target)


def test_invalid_methods_refused_in_the_header_form():
    assert invoke(b"/admin", (b"dapr-app-id", b"orders")).target.method == "admin"
    with pytest.raises(InvalidPath):
        invoke(b"/admin%3Fx", (b"dapr-app-id", b"orders"))


def test_target_must_be_origin_form():
    with pytest.raises(InvalidPath, match="origin form"):
        invoke(b"http://orders/v1.0/invoke/orders/method/x")


# --- the outbound guard: Host and Origin ------------------------------------------------------


def check(
    *headers: tuple[bytes, bytes],
    method: bytes = b"GET",
    target: bytes = b"/v1.0/invoke/orders/method/x",
    token: bytes | None = None,
) -> None:
    check_outbound_request(method, target, list(headers), token)


@pytest.mark.parametrize(
    "host",
    [
        b"localhost",
        b"localhost:3500",
        b"LOCALHOST:3500",
        b"127.0.0.1",
        b"127.0.0.1:3500",
        b"127.0.0.2:3500",  # all of 127/8 is loopback
        b"[::1]",
        b"[::1]:3500",
        b"foo.localhost",  # RFC 6761: *.localhost is loopback
        b"foo.localhost:3500",
    ],
)
def test_loopback_hosts_accepted(host):
    check((b"host", host))


@pytest.mark.parametrize(
    "host",
    [
        b"attacker.example",  # DNS rebinding: the browser still sends the attacker's name
        b"attacker.example:3500",
        b"127.0.0.1.nip.io",
        b"localhost.attacker.example",
        b"localhost.",  # the FQDN spelling is refused (fail closed)
        b"0.0.0.0:3500",  # "0.0.0.0 day": not loopback by name
        b"10.0.0.1",
        b"[::ffff:7f00:1]",  # IPv4-mapped loopback: ipaddress says not loopback; fail closed
        b"[::ffff:127.0.0.1]:3500",
        b"127.1",  # inet_aton shorthand: not an address to ipaddress
        b"2130706433",
        b"0x7f.0.0.1",
        b"localhost:abc",
        b"[::1]x",
        b"[::1",
        b"::1",  # unbracketed IPv6 with a port is ambiguous
        b"evil.example:80@localhost",
        b"",
    ],
)
def test_non_loopback_hosts_refused(host):
    with pytest.raises(OutboundForbidden) as caught:
        check((b"host", host))
    assert caught.value.http_status == 403
    assert "is not a loopback address" in str(caught.value)


def test_no_host_header_is_not_refused_by_the_host_rule():
    check()


@pytest.mark.parametrize(
    "origin",
    [b"http://localhost:3000", b"http://localhost", b"https://127.0.0.1:8443", b"http://[::1]:80"],
)
def test_loopback_origins_accepted(origin):
    check((b"host", b"localhost:3500"), (b"origin", origin))


@pytest.mark.parametrize(
    "origin",
    [
        b"null",  # sandboxed iframes and file:// pages
        b"http://evil",
        b"https://attacker.example",
        b"http://localhost.attacker.example",
        b"file://localhost",
        b"localhost:3000",  # no scheme
        b"http://localhost:3000/",  # an origin has no path
        b"http://127.0.0.1.nip.io",
    ],
)
def test_foreign_origins_refused(origin):
    with pytest.raises(OutboundForbidden, match="is not a loopback origin"):
        check((b"host", b"localhost:3500"), (b"origin", origin))


# --- the outbound guard: API token (CVE-2023-37918) -------------------------------------------

TOKEN = b"s3cret-token"


def test_token_not_required_when_none_is_configured():
    check((b"host", b"localhost"), token=None)


def test_correct_token_accepted():
    check((b"host", b"localhost"), (b"dapr-api-token", TOKEN), token=TOKEN)


@pytest.mark.parametrize(
    "sent",
    [
        None,
        b"",
        b"wrong",
        TOKEN + b"x",
        TOKEN[:-1],
        TOKEN.upper(),
    ],
)
def test_missing_or_wrong_token_refused(sent):
    headers = [(b"host", b"localhost")]
    if sent is not None:
        headers.append((b"dapr-api-token", sent))
    with pytest.raises(ApiTokenInvalid) as caught:
        check(*headers, token=TOKEN)
    assert "api token" in str(caught.value) and "'dapr-api-token'" in str(caught.value)
    assert caught.value.http_status == 401


def test_two_token_headers_are_refused_even_if_one_is_right():
    with pytest.raises(ApiTokenInvalid):
        check((b"dapr-api-token", b"wrong"), (b"dapr-api-token", TOKEN), token=TOKEN)


@pytest.mark.parametrize("target", [b"/v1.0/healthz", b"/v1.0/healthz/outbound"])
def test_healthz_get_is_exempt(target):
    check((b"host", b"localhost"), method=b"GET", target=target, token=TOKEN)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"/v1.0/healthz?x"),  # CVE-2023-37918: '/healthz' anywhere let the URL in
        (b"GET", b"/v1.0/invoke/orders/method/x?/healthz"),
        (b"GET", b"/x/healthz"),
        (b"GET", b"/v1.0/healthz/"),
        (b"GET", b"//v1.0/healthz"),
        (b"GET", b"/v1.0//healthz"),
        (b"GET", b"/v1.0/healthz/outbound/x"),
        (b"GET", b"/v1.0/healthz%2F"),
        (b"GET", b"/V1.0/HEALTHZ"),
        (b"GET", b"/v1.0/invoke/orders/method/v1.0/healthz"),
        (b"POST", b"/v1.0/healthz"),
        (b"HEAD", b"/v1.0/healthz"),
        (b"get", b"/v1.0/healthz"),
    ],
)
def test_healthz_lookalikes_need_the_token(method, target):
    with pytest.raises(ApiTokenInvalid):
        check((b"host", b"localhost"), method=method, target=target, token=TOKEN)
    # ... and pass with it.
    with_token = [(b"host", b"localhost"), (b"dapr-api-token", TOKEN)]
    check(*with_token, method=method, target=target, token=TOKEN)


def test_healthz_exemption_does_not_skip_the_host_rule():
    with pytest.raises(OutboundForbidden):
        check((b"host", b"attacker.example"), target=b"/v1.0/healthz", token=TOKEN)


def test_host_rule_runs_before_the_token():
    # A rebinding page never learns whether its guess at the token was right.
    with pytest.raises(OutboundForbidden):
        check((b"host", b"attacker.example"), (b"dapr-api-token", b"guess"), token=TOKEN)
