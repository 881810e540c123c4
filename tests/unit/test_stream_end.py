"""Which credential ends a streamed answer: the first of the caller's SVID notAfter and the
bearer token's expiry, each with the error that names it."""

from __future__ import annotations

from sidecar.http.relay import CallerExpired, CallerTokenExpired, stream_end


def test_a_token_expiring_before_the_svid_ends_the_stream_with_token_expired():
    end = stream_end(2_000.0, 1_500.0)
    assert end.at == 1_500.0
    error = end.error()
    assert isinstance(error, CallerTokenExpired) and error.code == "token_expired"


def test_an_svid_expiring_before_the_token_ends_the_stream_with_its_own_error():
    end = stream_end(1_500.0, 2_000.0)
    assert end.at == 1_500.0 and isinstance(end.error(), CallerExpired)


def test_without_a_token_the_svid_alone_ends_the_stream():
    end = stream_end(1_500.0)
    assert end.at == 1_500.0 and isinstance(end.error(), CallerExpired)


def test_a_token_alone_ends_the_stream():
    end = stream_end(None, 1_500.0)
    assert end.at == 1_500.0 and isinstance(end.error(), CallerTokenExpired)


def test_with_neither_nothing_ends_the_stream():
    assert stream_end(None, None) is None
