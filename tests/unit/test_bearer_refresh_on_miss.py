"""unknownKidRefreshInterval: how soon a newly published key is fetched, and what a flood of
made-up kids costs the issuer (at most one GET per interval)."""

from __future__ import annotations

import pytest

from sidecar.bearer import BearerConfigInvalid, JwksCache, JwksSource, parse_bearer_component
from sidecar.bearer.config import DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL

JWKS_URL = "https://login.example.com/jwks.json"
# One usable key: an empty set would count as a failed fetch and be retried on its own schedule.
JWKS = (
    b'{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",'
    b' "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",'
    b' "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
)


def component(*extra: dict) -> dict:
    metadata = [
        {"name": "issuer", "value": "https://login.example.com/realms/mesh"},
        {"name": "audience", "value": "mcp-server"},
        {"name": "jwksURL", "value": JWKS_URL},
        *extra,
    ]
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "bearer"},
        "spec": {"type": "middleware.http.bearer", "version": "v1", "metadata": metadata},
    }


def test_default_is_ten_seconds_and_the_source_uses_it():
    config = parse_bearer_component(component())
    assert config.unknown_kid_refresh_interval == DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL == 10.0
    assert JwksSource(config).min_refresh_on_miss == 10.0


@pytest.mark.parametrize(("value", "seconds"), [("2s", 2.0), ("1m", 60.0), ("1500ms", 1.5)])
def test_the_interval_is_read_from_component_metadata(value, seconds):
    item = {"name": "unknownKidRefreshInterval", "value": value}
    config = parse_bearer_component(component(item))
    assert config.unknown_kid_refresh_interval == seconds
    assert JwksSource(config).min_refresh_on_miss == seconds


@pytest.mark.parametrize("value", ["0s", "500ms", "2h", "10"])
def test_an_interval_that_would_hammer_the_issuer_or_never_refresh_is_refused(value):
    with pytest.raises(BearerConfigInvalid, match=r"spec.metadata\[3\].value"):
        parse_bearer_component(component({"name": "unknownkidrefreshinterval", "value": value}))


def _fetched_cache(miss: float) -> JwksCache:
    cache = JwksCache(JWKS_URL, refresh_interval=600, min_refresh_on_miss=miss)
    cache.begin_fetch(0.0)
    cache.on_fetched(JWKS, 0.0)
    return cache


def test_a_new_key_is_fetched_within_one_interval():
    cache = _fetched_cache(10.0)
    assert not cache.on_unknown_kid("new", 9.9)  # too soon after the last fetch
    assert cache.on_unknown_kid("new", 10.0)  # within seconds, not the 600 s schedule
    assert cache.needs_fetch(10.0)


def test_a_flood_of_made_up_kids_costs_one_fetch_per_interval():
    cache = _fetched_cache(10.0)
    fetches = 0
    for tick in range(0, 600):  # a new kid every 100 ms for a minute
        now = tick / 10
        cache.on_unknown_kid(f"kid-{tick}", now)
        if cache.needs_fetch(now):
            fetches += 1
            cache.begin_fetch(now)
            cache.on_fetched(JWKS, now)
    assert fetches == 5  # at 10, 20, 30, 40, 50 s
