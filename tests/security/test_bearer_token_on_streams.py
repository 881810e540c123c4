"""A streamed answer ends with the bearer token its request was judged with.

The bearer layer checks a token when a request is judged (and again when a held-back body
completes). An SSE stream is one request that may last hours: opened with a token that expires
a few seconds later, it kept delivering events for as long as the app sent them. The receiving
sidecar now ends it at the token's ``exp`` (plus the configured leeway, here none), as it ends
one at the caller's SVID expiry; one whose head the app sends only after the expiry never
starts. Twin: a stream opened with a token valid for minutes delivers what comes later. An
upload (a chunked request body the caller keeps sending) is cut at the expiry the same way.

Through real sidecars: the caller's outbound-only sidecar ``client``, mutual TLS, and the
``server`` sidecar with a bearer component whose issuer this module serves on 127.0.0.1. The
test app's ``/sse-gated`` sends one event at once and the next only after ``/release``.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests._support.bearer_documents import (
    bearer_component,
    bearer_configuration,
    bearer_mesh,
)
from tests._support.gated_stream import (
    INVOKE_GATED,
    open_gated_stream,
    rest_of_gated_stream,
    trickle_upload,
)
from tests._support.in_process import audit_path, last_record
from tests._support.jose_mint import claims, sign

pytestmark = pytest.mark.e2e

AUDIENCE = "mesh-api"
SHORT = 2  # seconds a short-lived token is valid for (exp is whole seconds: 1 to 2 s)


@pytest.fixture
def world(tmp_path, mesh_ca):
    def documents(issuer):
        component = bearer_component("bearer-guard", issuer, AUDIENCE, leeway="0s")
        return [component, bearer_configuration("guard-config", "bearer-guard")]

    with bearer_mesh(tmp_path, mesh_ca, AUDIENCE, documents, "guard-config") as world:
        _wait_for_keys(world)
        yield world


def _token(world, lifetime: float) -> str:
    return sign(world["key"], claims(world["issuer"], AUDIENCE, "alice", exp_in=lifetime))


def _wait_for_keys(world) -> None:
    """The first JWKS fetch runs in the background: until it lands a token gets 503."""
    url = f"{world['client'].url()}/v1.0/invoke/server/method/echo"
    headers = {"authorization": f"Bearer {_token(world, 300)}"}
    deadline = time.monotonic() + 15
    while (reply := httpx.get(url, headers=headers, timeout=15)).status_code == 503:
        assert time.monotonic() < deadline, reply.text
        time.sleep(0.05)
    assert reply.status_code == 200, reply.text


def _release(world) -> None:
    httpx.get(f"http://127.0.0.1:{world['app'].ready['port']}/release", timeout=5)


def _connect(world) -> socket.socket:
    host, port = world["client"].url().removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _bearer(token: str) -> bytes:
    return b"authorization: Bearer %s\r\n" % token.encode()


def test_twin_a_stream_opened_with_a_long_lived_token_delivers_what_comes_later(world):
    with _connect(world) as sock:
        open_gated_stream(sock, INVOKE_GATED, _bearer(_token(world, 300)))
        _release(world)
        data, closed = rest_of_gated_stream(sock, timeout=10)
    assert b"data: second" in data and not closed, data
    record = last_record(audit_path(world["home"], "server"), "sse-gated")
    assert (record["decision"], record["status"], record["cut"]) == ("allow", 200, None), record


def test_a_stream_is_cut_when_the_token_it_was_opened_with_expires(world):
    token = _token(world, SHORT)
    expiry = time.monotonic() + SHORT
    with _connect(world) as sock:
        try:
            open_gated_stream(sock, INVOKE_GATED, _bearer(token))  # judged while it is valid
            # Cut at the expiry (the deadline sweep runs at least once a second); without the
            # cut, nothing would arrive or close until the app is released.
            data, closed = rest_of_gated_stream(sock, timeout=(expiry - time.monotonic()) + 5)
        finally:
            _release(world)
    assert closed and b"data: second" not in data, data
    # The record says the stream was allowed, then cut, and why.
    record = last_record(audit_path(world["home"], "server"), "sse-gated")
    assert (record["decision"], record["status"]) == ("allow", 200), record
    assert record["cut"].startswith("token_expired: the bearer token"), record


def test_a_stream_whose_head_comes_after_the_token_expired_never_starts(world):
    # The app holds its whole answer past the token's expiry, then sends it at once: no read
    # of it waits, so the stream's deadline alone would let it through.
    token = _token(world, SHORT)
    expiry = time.monotonic() + SHORT
    with _connect(world) as sock:
        sock.sendall(
            b"GET /v1.0/invoke/server/method/sse-held HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            + _bearer(token)
            + b"\r\n"
        )
        time.sleep(max(0.0, expiry - time.monotonic()) + 0.5)
        _release(world)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 403 "), data
        while b"}" not in body:  # the sidecar's JSON error, not the app's event
            body += sock.recv(65536)
    assert b'"token_expired"' in body and b"data: held" not in body, body


INVOKE_SINK = b"/v1.0/invoke/server/method/sink"


def _sunk(world) -> int:
    return httpx.get(f"http://127.0.0.1:{world['app'].ready['port']}/sunk", timeout=5).json()[
        "size"
    ]


def test_twin_an_upload_with_a_long_lived_token_arrives_whole(world):
    with _connect(world) as sock:
        status, sent = trickle_upload(
            sock, INVOKE_SINK, seconds=1.5, extra_headers=_bearer(_token(world, 300))
        )
    assert status == 200 and _sunk(world) == sent


def test_an_upload_is_cut_when_the_token_it_was_sent_with_expires(world):
    # The head is judged while the token is valid; the body keeps coming after it expired.
    with _connect(world) as sock:
        status, sent = trickle_upload(
            sock, INVOKE_SINK, seconds=SHORT + 3, extra_headers=_bearer(_token(world, SHORT))
        )
    assert status in (0, 403), status  # refused (or cut) before the body ended
    assert _sunk(world) < sent  # what came after the cut never reached the app
