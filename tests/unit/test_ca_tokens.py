"""Join tokens: the pure rules (mint, check, consume, prune) and the locked file store."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from ca._errors import CAStorageError, TokenExpired, TokenInvalid, TokenUsed
from ca.home import CALayout
from ca.tokens import (
    KEEP_AFTER_EXPIRY,
    TOKEN_PREFIX,
    TokenStore,
    check,
    consume,
    mint,
    prune,
    token_hash,
)
from identity import AppIdentity

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WEB = AppIdentity("public", "default", "web")
TEN_MIN = dt.timedelta(minutes=10)


def test_token_is_prefixed_high_entropy_and_stored_only_as_its_hash() -> None:
    token, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    assert token.startswith(TOKEN_PREFIX) and len(token) == len(TOKEN_PREFIX) + 43
    assert list(records) == [token_hash(token)]
    assert token not in json.dumps({h: r.to_json() for h, r in records.items()})
    other, _ = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    assert other != token


def test_consume_once_then_refuse_reuse() -> None:
    token, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    identity, records = consume(records, token, now=NOW)
    assert identity == WEB
    with pytest.raises(TokenUsed, match="already used"):
        consume(records, token, now=NOW)


def test_expired_token_is_refused_at_the_instant_it_expires() -> None:
    token, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    assert check(records, token, now=NOW + TEN_MIN - dt.timedelta(microseconds=1)).identity == WEB
    with pytest.raises(TokenExpired, match="expired at"):
        check(records, token, now=NOW + TEN_MIN)


@pytest.mark.parametrize(
    ("presented", "message"),
    [
        ("", "not a trustmesh join token (expected tmjoin_…)"),
        ("tmjoin_short", "not a trustmesh join token (expected tmjoin_…)"),
        ("x" * 50, "not a trustmesh join token (expected tmjoin_…)"),
        (TOKEN_PREFIX + "A" * 43, "unknown join token"),
    ],
)
def test_unknown_or_malformed_tokens(presented: str, message: str) -> None:
    _, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    with pytest.raises(TokenInvalid) as caught:
        check(records, presented, now=NOW)
    assert str(caught.value) == message


def test_the_hash_of_a_token_is_not_itself_a_token() -> None:
    token, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    with pytest.raises(TokenInvalid):
        check(records, token_hash(token), now=NOW)


def test_prune_keeps_records_a_day_past_expiry() -> None:
    _, records = mint({}, WEB, now=NOW, ttl=TEN_MIN)
    assert prune(records, now=NOW + TEN_MIN + KEEP_AFTER_EXPIRY - dt.timedelta(seconds=1))
    assert not prune(records, now=NOW + TEN_MIN + KEEP_AFTER_EXPIRY)


def test_store_file_is_private_and_shared_between_instances(tmp_path) -> None:
    layout = CALayout(tmp_path / "home")
    token = TokenStore(layout).issue(WEB, now=NOW, ttl=TEN_MIN)
    assert (layout.tokens.stat().st_mode & 0o777) == 0o600
    assert token not in layout.tokens.read_text()
    assert TokenStore(layout).check(token, now=NOW) == WEB  # checking does not use it up
    assert TokenStore(layout).consume(token, now=NOW) == WEB
    with pytest.raises(TokenUsed):
        TokenStore(layout).consume(token, now=NOW)


def test_racing_consumers_get_exactly_one_success(tmp_path) -> None:
    """The flock makes read-modify-write atomic: 8 threads, one token, one winner."""
    layout = CALayout(tmp_path / "home")
    token = TokenStore(layout).issue(WEB, now=NOW, ttl=TEN_MIN)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        try:
            TokenStore(layout).consume(token, now=NOW)
            outcomes.append("ok")
        except TokenUsed:
            outcomes.append("used")

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["used"] * 7


def test_a_damaged_token_file_fails_closed(tmp_path) -> None:
    layout = CALayout(tmp_path / "home").ensure()
    layout.tokens.write_text("{not json")
    with pytest.raises(CAStorageError, match="is damaged"):
        TokenStore(layout).check(TOKEN_PREFIX + "A" * 43, now=NOW)
