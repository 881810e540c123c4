"""Header hygiene on both hops: hop-by-hop removal (RFC 9110 §7.6.1), drop sets, body framing.

Dapr's list of headers never forwarded is in ``notes/dapr-compat.md`` §3.2
(``pkg/messaging/v1/util.go``). Names arrive lower-cased from h11.
"""

from __future__ import annotations

import pytest

from sidecar.http.headers import (
    CALLER_HEADERS,
    HOP_BY_HOP,
    LOCAL_ONLY,
    connection_tokens,
    forwardable,
    framing_for,
    get_header,
    has_body_framing,
    is_chunked,
)

NOTHING = frozenset()

DAPR_HOP_BY_HOP = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
    b"http2-settings",
    b"te",
    b"trailer",
    b"proxy-authorization",
    b"proxy-authenticate",
]


@pytest.mark.parametrize("name", [*DAPR_HOP_BY_HOP, b"expect"])
def test_hop_by_hop_headers_never_forwarded(name):
    headers = [(b"content-type", b"application/json"), (name, b"x"), (b"accept", b"*/*")]
    assert forwardable(headers, NOTHING) == [
        (b"content-type", b"application/json"),
        (b"accept", b"*/*"),
    ]


def test_daprs_hop_by_hop_list_is_covered():
    assert set(DAPR_HOP_BY_HOP) <= HOP_BY_HOP


def test_end_to_end_headers_kept_in_order_with_repeats():
    headers = [
        (b"accept", b"a"),
        (b"x-trace", b"1"),
        (b"accept", b"b"),
        (b"authorization", b"Bearer t"),
        (b"traceparent", b"00-abc-def-01"),
        (b"baggage", b"k=v"),
    ]
    assert forwardable(headers, NOTHING) == headers


def test_connection_nominated_headers_removed():
    headers = [
        (b"connection", b"close, X-Secret ,x-other"),
        (b"x-secret", b"1"),
        (b"x-other", b"2"),
        (b"x-kept", b"3"),
    ]
    assert forwardable(headers, NOTHING) == [(b"x-kept", b"3")]


def test_connection_nominations_from_several_headers_and_empty_items():
    headers = [
        (b"connection", b"x-a"),
        (b"connection", b" , ,X-B,"),
        (b"x-a", b"1"),
        (b"x-b", b"2"),
        (b"x-c", b"3"),
    ]
    assert connection_tokens(headers) == frozenset({b"x-a", b"x-b"})
    assert forwardable(headers, NOTHING) == [(b"x-c", b"3")]


def test_connection_can_nominate_an_end_to_end_header():
    # The sender says this copy is for the next hop only; that wins.
    headers = [(b"connection", b"authorization"), (b"authorization", b"Basic x")]
    assert forwardable(headers, NOTHING) == []
    assert forwardable([(b"authorization", b"Basic x")], NOTHING) == [
        (b"authorization", b"Basic x")
    ]


def test_connection_tokens_without_connection_header():
    assert connection_tokens([(b"x-a", b"close")]) == frozenset()


@pytest.mark.parametrize("name", sorted(CALLER_HEADERS))
def test_caller_headers_dropped_on_the_way_in(name):
    # A client must not be able to claim another caller's identity to the app.
    headers = [(name, b"spoofed"), (b"x-kept", b"1")]
    assert forwardable(headers, CALLER_HEADERS) == [(b"x-kept", b"1")]
    # ... while without the drop set they are ordinary headers.
    assert forwardable(headers, NOTHING) == headers


@pytest.mark.parametrize("name", sorted(LOCAL_ONLY))
def test_local_only_headers_never_leave_the_host(name):
    headers = [(name, b"v"), (b"x-kept", b"1")]
    assert forwardable(headers, LOCAL_ONLY) == [(b"x-kept", b"1")]


def test_local_only_covers_token_app_id_and_host():
    assert {b"dapr-api-token", b"dapr-app-id", b"host"} <= LOCAL_ONLY


def test_drop_sets_combine():
    headers = [
        (b"dapr-caller-app-id", b"evil"),
        (b"dapr-api-token", b"t"),
        (b"x-strip-me", b"1"),
        (b"x-kept", b"2"),
    ]
    drop = CALLER_HEADERS | LOCAL_ONLY | frozenset({b"x-strip-me"})
    assert forwardable(headers, drop) == [(b"x-kept", b"2")]


def test_forwardable_accepts_any_iterable():
    assert forwardable(iter([(b"connection", b"x-a"), (b"x-a", b"1"), (b"b", b"2")]), NOTHING) == [
        (b"b", b"2")
    ]


# --- get_header / is_chunked ------------------------------------------------------------------


def test_get_header_joins_repeats():
    headers = [(b"accept", b"a"), (b"x", b"1"), (b"accept", b"b")]
    assert get_header(headers, b"accept") == b"a, b"
    assert get_header(headers, b"x") == b"1"
    assert get_header(headers, b"missing") is None
    assert get_header([(b"x", b"")], b"x") == b""


@pytest.mark.parametrize(
    ("values", "chunked"),
    [
        ([b"chunked"], True),
        ([b"Chunked"], True),
        ([b"gzip, chunked"], True),
        ([b"gzip", b"chunked"], True),  # repeated header: the last coding decides
        ([b"chunked, gzip"], False),  # RFC 9112 §6.3: chunked must be final
        ([b"gzip"], False),
        ([], False),
    ],
)
def test_is_chunked(values, chunked):
    assert is_chunked([(b"transfer-encoding", v) for v in values]) is chunked


def test_has_body_framing():
    assert has_body_framing([(b"content-length", b"0")])
    assert has_body_framing([(b"transfer-encoding", b"chunked")])
    assert not has_body_framing([(b"content-type", b"text/plain")])


# --- framing_for --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("incoming", "framing"),
    [
        ([(b"content-length", b"12")], [(b"content-length", b"12")]),
        ([(b"content-length", b"0")], [(b"content-length", b"0")]),
        ([(b"transfer-encoding", b"chunked")], [(b"transfer-encoding", b"chunked")]),
        ([(b"transfer-encoding", b"gzip, chunked")], [(b"transfer-encoding", b"chunked")]),
        ([(b"content-type", b"text/plain")], []),
        ([], []),
    ],
)
def test_framing_for(incoming, framing):
    assert framing_for(incoming) == framing


def test_framing_for_ignores_other_headers():
    incoming = [(b"x", b"1"), (b"content-length", b"5"), (b"connection", b"close")]
    assert framing_for(incoming) == [(b"content-length", b"5")]


def test_hop_by_hop_removal_plus_framing_keeps_one_transfer_encoding():
    incoming = [(b"transfer-encoding", b"chunked"), (b"x", b"1")]
    assert forwardable(incoming, NOTHING) + framing_for(incoming) == [
        (b"x", b"1"),
        (b"transfer-encoding", b"chunked"),
    ]


def test_transfer_encoding_overrides_content_length_when_forwarding():
    incoming = [(b"content-length", b"3"), (b"transfer-encoding", b"chunked")]
    onward = forwardable(incoming, NOTHING) + framing_for(incoming)
    assert onward == [(b"transfer-encoding", b"chunked")]
