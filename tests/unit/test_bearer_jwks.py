"""JWKS parsing and the sans-I/O JWKS cache, driven by passing ``now``."""

from __future__ import annotations

import itertools
import json
import random
import warnings

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OctKey, RSAKey

from sidecar.bearer import (
    FetchState,
    JwksCache,
    JwksCacheMisuse,
    JwksInvalid,
    KeysUnavailable,
    TokenRejected,
    parse_jwks,
    validate_token,
)
from tests._support.bearer import JWKS_URL, NOW, Issuer, make_config


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def parse(body: bytes):
    return parse_jwks(body, source_url=JWKS_URL, fetched_at=NOW)


def jwks(*members) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


# -- parse_jwks -----------------------------------------------------------------------------------


def test_usable_keys_are_indexed_by_kid(issuer):
    snapshot = parse(issuer.jwks())
    assert snapshot.usable_kids == {"rsa-1", "ec-1", "ed-1"}
    assert snapshot.source_url == JWKS_URL
    assert snapshot.fetched_at == NOW
    assert set(snapshot.keys["rsa-1"].verifiers) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
    }
    assert set(snapshot.keys["ec-1"].verifiers) == {"ES256"}
    assert set(snapshot.keys["ed-1"].verifiers) == {"EdDSA"}


def test_unsupported_kty_ignored(issuer):
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), {"kty": "XYZ", "kid": "future"}))
    assert snapshot.usable_kids == {"rsa-1"}
    assert "future" not in snapshot.keys
    assert any("unsupported kty 'XYZ'" in why for why in snapshot.skipped)


def test_key_without_kid_skipped(issuer):
    anonymous = issuer.rsa_next.as_dict(private=False)
    del anonymous["kid"]
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), anonymous))
    assert snapshot.usable_kids == {"rsa-1"}


def test_published_private_key_skipped(issuer):
    leaked = issuer.rsa_next.as_dict(private=True)
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), leaked))
    assert snapshot.usable_kids == {"rsa-1"}
    assert any("private key material" in why for why in snapshot.skipped)


def test_weak_rsa_key_skipped(issuer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        weak = RSAKey.generate_key(1024, parameters={"kid": "weak"})
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), weak.as_dict(private=False)))
    assert snapshot.usable_kids == {"rsa-1"}


def test_unsupported_curve_skipped(issuer):
    k1 = ECKey.generate_key("secp256k1", parameters={"kid": "k1"})
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), k1.as_dict(private=False)))
    assert snapshot.usable_kids == {"rsa-1"}


def test_oct_key_recorded_but_never_usable(issuer):
    secret = OctKey.generate_key(256, parameters={"kid": "hmac"})
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), secret.as_dict(private=True)))
    assert snapshot.keys["hmac"].kty == "oct"
    assert not snapshot.keys["hmac"].verifiers
    assert snapshot.usable_kids == {"rsa-1"}


def test_duplicate_kid_drops_every_key_with_it(issuer):
    twin = issuer.rsa_next.as_dict(private=False) | {"kid": "rsa-1"}
    snapshot = parse(jwks(issuer.rsa.as_dict(private=False), twin, issuer.ec.as_dict()))
    assert snapshot.ambiguous_kids == {"rsa-1"}
    assert "rsa-1" not in snapshot.keys
    assert snapshot.usable_kids == {"ec-1"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": [], "keys": []}',
        b'{"keys": [NaN]}',
        b"\xff\xfe",
    ],
)
def test_unusable_document_refused(body):
    with pytest.raises(JwksInvalid, match=JWKS_URL):
        parse(body)


def test_set_of_only_unusable_keys_refused():
    secret = OctKey.generate_key(256, parameters={"kid": "hmac"})
    with pytest.raises(JwksInvalid, match="no usable signing key"):
        parse(jwks(secret.as_dict(private=True)))


def test_duplicate_json_member_in_a_key_refused(issuer):
    rsa = issuer.rsa.as_dict(private=False)
    member = f'{{"kty": "RSA", "kid": "rsa-1", "n": "{rsa["n"]}", "e": "AQAB", "kid": "other"}}'
    body = '{"keys": [' + member + "]}"
    with pytest.raises(JwksInvalid, match="duplicate key 'kid'"):
        parse(body.encode())


# -- JwksCache: schedule --------------------------------------------------------------------------


def fetch(cache: JwksCache, now: float, body: bytes, max_age: float | None = None) -> bool:
    assert cache.needs_fetch(now)
    assert cache.begin_fetch(now) == JWKS_URL
    return cache.on_fetched(body, now, cache_control_max_age=max_age)


def test_fresh_cache_wants_a_fetch_and_has_no_keys():
    cache = JwksCache(JWKS_URL)
    assert cache.needs_fetch(NOW)
    assert cache.snapshot() is None
    assert cache.keys() == KeysUnavailable(JWKS_URL, None)


def test_refresh_after_interval(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600)
    assert fetch(cache, NOW, issuer.jwks())
    assert cache.snapshot().usable_kids == {"rsa-1", "ec-1", "ed-1"}
    assert not cache.needs_fetch(NOW + 599)
    assert cache.needs_fetch(NOW + 600)


def test_longer_cache_control_max_age_is_honoured(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600)
    fetch(cache, NOW, issuer.jwks(), max_age=3600)
    assert not cache.needs_fetch(NOW + 3599)
    assert cache.needs_fetch(NOW + 3600)


def test_shorter_cache_control_max_age_does_not_hammer(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600)
    fetch(cache, NOW, issuer.jwks(), max_age=1)
    assert not cache.needs_fetch(NOW + 599)


def test_absurd_max_age_is_capped_at_a_day(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600)
    fetch(cache, NOW, issuer.jwks(), max_age=10**9)
    assert cache.needs_fetch(NOW + 86400)


# -- JwksCache: failures --------------------------------------------------------------------------


def test_fetch_failure_without_cached_keys_reports_the_url():
    cache = JwksCache(JWKS_URL)
    cache.begin_fetch(NOW)
    cache.on_fetch_failed("connection refused", NOW)
    assert cache.keys() == KeysUnavailable(JWKS_URL, "connection refused")
    assert cache.last_error == "connection refused"


def test_fetch_failure_keeps_cached_keys_and_they_keep_validating(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600)
    fetch(cache, NOW, issuer.jwks())
    cache.begin_fetch(NOW + 600)
    cache.on_fetch_failed("503 from issuer", NOW + 600)
    snapshot = cache.keys()
    assert snapshot is cache.snapshot() is not None
    token = issuer.mint()
    verified = validate_token(token, config=make_config(), keys=snapshot, now=NOW + 1)
    assert verified.subject == "alice"


def test_unusable_jwks_does_not_replace_working_keys(issuer):
    cache = JwksCache(JWKS_URL)
    fetch(cache, NOW, issuer.jwks())
    before = cache.snapshot()
    assert not fetch(cache, NOW + 600, b'{"keys": []}')
    assert cache.snapshot() is before
    assert "no usable signing key" in cache.last_error


def test_failures_back_off_from_five_seconds_to_a_minute():
    cache = JwksCache(JWKS_URL)
    now, delays = NOW, []
    for _ in range(7):
        cache.begin_fetch(now)
        cache.on_fetch_failed("timeout", now)
        delays.append(cache.next_fetch_at - now)
        now = cache.next_fetch_at
    assert delays == [5, 10, 20, 40, 60, 60, 60]


def test_success_resets_the_back_off(issuer):
    cache = JwksCache(JWKS_URL)
    for t in (NOW, NOW + 5):
        cache.begin_fetch(t)
        cache.on_fetch_failed("timeout", t)
    fetch(cache, NOW + 15, issuer.jwks())
    assert cache.consecutive_failures == 0
    assert cache.last_error is None


# -- JwksCache: moves -----------------------------------------------------------------------------


def test_result_without_a_fetch_in_flight_is_a_misuse(issuer):
    cache = JwksCache(JWKS_URL)
    with pytest.raises(JwksCacheMisuse):
        cache.on_fetched(issuer.jwks(), NOW)
    with pytest.raises(JwksCacheMisuse):
        cache.on_fetch_failed("x", NOW)


def test_second_concurrent_fetch_is_a_misuse():
    cache = JwksCache(JWKS_URL)
    cache.begin_fetch(NOW)
    assert cache.state is FetchState.FETCHING
    assert not cache.needs_fetch(NOW + 3600)
    with pytest.raises(JwksCacheMisuse):
        cache.begin_fetch(NOW)


# -- JwksCache: unknown kids ----------------------------------------------------------------------


def test_unknown_kid_then_rotation_refreshes_once_and_validates(issuer):
    config = make_config()
    cache = JwksCache(JWKS_URL, refresh_interval=600, min_refresh_on_miss=60)
    fetch(cache, NOW, issuer.jwks(issuer.rsa))
    rotated = issuer.mint(key=issuer.rsa_next)  # the issuer starts signing with rsa-2
    now = NOW + 100

    with pytest.raises(TokenRejected) as info:
        validate_token(rotated, config=config, keys=cache.keys(), now=now)
    assert info.value.refresh_may_help
    assert cache.on_unknown_kid("rsa-2", now)
    assert not cache.on_unknown_kid("rsa-2", now)  # asked once is enough
    assert fetch(cache, now, issuer.jwks(issuer.rsa, issuer.rsa_next))

    verified = validate_token(rotated, config=config, keys=cache.keys(), now=now)
    assert verified.key_id == "rsa-2"


def test_flood_of_random_kids_refreshes_at_most_once_per_interval(issuer):
    cache = JwksCache(JWKS_URL, refresh_interval=600, min_refresh_on_miss=60)
    fetch(cache, NOW, issuer.jwks())
    rng = random.Random(7)
    fetches = []
    for step in range(6000):  # ten minutes of ten random kids a second
        now = NOW + 0.1 * step
        if cache.on_unknown_kid(f"kid-{rng.getrandbits(64):x}", now) or cache.needs_fetch(now):
            fetches.append(now - NOW)
            fetch(cache, now, issuer.jwks())
    gaps = [b - a for a, b in itertools.pairwise(fetches)]
    assert len(fetches) <= 10
    assert all(gap >= 60 - 1e-6 for gap in gaps)
    assert fetches[0] >= 60 - 1e-6  # the initial fetch at NOW counts


def test_unknown_kid_while_fetching_waits_for_that_fetch(issuer):
    cache = JwksCache(JWKS_URL, min_refresh_on_miss=60)
    fetch(cache, NOW, issuer.jwks())
    cache.begin_fetch(NOW + 600)
    assert not cache.on_unknown_kid("new", NOW + 700)


def test_known_kid_never_triggers_a_refresh(issuer):
    cache = JwksCache(JWKS_URL, min_refresh_on_miss=60)
    fetch(cache, NOW, issuer.jwks())
    assert not cache.on_unknown_kid("rsa-1", NOW + 300)
    assert cache.on_unknown_kid("rsa-9", NOW + 300)


def test_unknown_kid_with_issuer_down_is_rate_limited_too():
    cache = JwksCache(JWKS_URL, min_refresh_on_miss=60)
    cache.begin_fetch(NOW)
    cache.on_fetch_failed("down", NOW)
    assert not cache.on_unknown_kid("k", NOW + 30)
    assert cache.on_unknown_kid("k", NOW + 60)


@pytest.mark.parametrize(("interval", "miss"), [(0, 60), (600, 0), (-1, 60)])
def test_intervals_must_be_positive(interval, miss):
    with pytest.raises(ValueError):
        JwksCache(JWKS_URL, refresh_interval=interval, min_refresh_on_miss=miss)
