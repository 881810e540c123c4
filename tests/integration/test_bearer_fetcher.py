"""JwksSource: discovery, first fetch, rotation, floods and a dead issuer.

Two transports, one fake site (``tests/_support/jwks_site.py``): a real socket served from a
thread, with the real ``HttpsGetter``, in real time; and the in-memory ``Site.fetch`` on
``autojump_clock`` for everything measured in minutes. Keys and tokens are made with joserfc.
Token claims are checked at the fixed wall-clock ``NOW``; the cache runs on trio time.
"""

from __future__ import annotations

import json
import math
import ssl

import pytest
import structlog
import trio
from cryptography.hazmat.primitives import serialization

from sidecar.bearer import (
    FetchError,
    HttpsGetter,
    JwksSnapshot,
    JwksSource,
    KeysUnavailable,
    cache_control_max_age,
    check_bearer,
    refresh_may_help,
    unverified_kid,
)
from tests._support.bearer import ISSUER, JWKS_URL, NOW, Issuer, claims, make_config
from tests._support.certs import build_cert
from tests._support.jwks_site import Site, closed_port, serve, silent_listener

JWKS_PATH = "/realms/mesh/certs"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


def check(source: JwksSource, token: str, config):
    return check_bearer(
        {"authorization": f"Bearer {token}"},
        config=config,
        keys=source.keys(),
        now=NOW,  # wall-clock seconds for the claims; the cache never sees this clock
        resource_metadata_url=None,
        realm="mcp-server",
    )


async def wait_for(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


# -- the real HTTP client, real sockets, real time ------------------------------------------------


async def test_first_fetch_over_http_and_token_validates(issuer):
    site = Site()
    site.put("/jwks.json", issuer.jwks(issuer.rsa), cache_control="public, max-age=1200")
    with serve(site) as base:
        iss = base
        config = make_config(issuer=iss, jwks_url=f"{base}/jwks.json")
        source = JwksSource(config)
        async with trio.open_nursery() as nursery:
            with structlog.testing.capture_logs() as logs:
                await nursery.start(source.run)
            keys = source.keys()
            assert isinstance(keys, JwksSnapshot)
            assert keys.usable_kids == {"rsa-1"}
            assert keys.source_url == f"{base}/jwks.json"
            # max-age 1200 > the 600 s default interval: the next fetch waits for it
            fetched = next(e for e in logs if e["event"] == "jwks fetched")
            assert fetched["next_in"] == pytest.approx(1200, abs=5)
            decision, verified = check(source, issuer.mint(claims(iss=iss)), config)
            assert decision.allowed, decision
            assert verified.key_id == "rsa-1"
            nursery.cancel_scope.cancel()
    assert site.hits["/jwks.json"] == 1


async def test_discovery_finds_jwks_uri(issuer):
    site = Site()
    with serve(site) as base:
        site.put(
            "/.well-known/openid-configuration",
            {"issuer": base, "jwks_uri": f"{base}/keys", "token_endpoint": f"{base}/token"},
        )
        site.put("/keys", issuer.jwks(issuer.rsa))
        config = make_config(issuer=base)
        source = JwksSource(config)
        assert source.jwks_url is None
        assert source.keys() == KeysUnavailable(f"{base}/.well-known/openid-configuration")
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run)
            assert source.jwks_url == f"{base}/keys"
            assert isinstance(source.keys(), JwksSnapshot)
            decision, _ = check(source, issuer.mint(claims(iss=base)), config)
            assert decision.allowed, decision
            nursery.cancel_scope.cancel()
    assert site.hits["/.well-known/openid-configuration"] == 1
    assert site.hits["/keys"] == 1


async def test_discovery_issuer_mismatch_is_refused_and_no_keys_are_fetched(issuer):
    """A document served for another issuer (here: a trailing slash) must not hand us keys."""
    site = Site()
    with serve(site) as base:
        site.put(
            "/.well-known/openid-configuration",
            {"issuer": base + "/", "jwks_uri": f"{base}/keys"},
        )
        site.put("/keys", issuer.jwks(issuer.rsa))
        config = make_config(issuer=base)
        source = JwksSource(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run)
            keys = source.keys()
            nursery.cancel_scope.cancel()
    assert isinstance(keys, KeysUnavailable)
    assert keys.jwks_url == f"{base}/.well-known/openid-configuration"
    assert f"not exactly {base!r}" in keys.error
    assert source.jwks_url is None
    assert site.hits["/keys"] == 0


async def test_issuer_down_at_start_still_starts_and_answers_503(issuer):
    url = f"http://127.0.0.1:{closed_port()}/jwks.json"
    config = make_config(jwks_url=url)
    source = JwksSource(config)
    with structlog.testing.capture_logs() as logs, trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run)
            keys = source.keys()
            decision, _ = check(source, issuer.mint(), config)
            nursery.cancel_scope.cancel()
    assert isinstance(keys, KeysUnavailable)
    assert keys.jwks_url == url
    assert url in keys.error
    assert decision.status == 503
    assert url in json.loads(decision.body)["message"]
    failure = next(e for e in logs if e["event"] == "jwks fetch failed")
    assert failure["url"] == url and failure["keys_kept"] is False and failure["error"]


async def test_unknown_kid_triggers_a_prompt_refresh_over_http(issuer):
    site = Site()
    site.put("/jwks.json", issuer.jwks(issuer.rsa))
    with serve(site) as base:
        config = make_config(issuer=base, jwks_url=f"{base}/jwks.json")
        source = JwksSource(config, min_refresh_on_miss=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run)
            site.put("/jwks.json", issuer.jwks(issuer.rsa, issuer.rsa_next))  # rotation
            token = issuer.mint(claims(iss=base), key=issuer.rsa_next)
            decision, _ = check(source, token, config)
            assert refresh_may_help(decision)
            await trio.sleep(0.3)
            assert source.request_refresh(unverified_kid(token)) is True
            await wait_for(lambda: site.hits["/jwks.json"] == 2)
            await wait_for(lambda: "rsa-2" in source.keys().usable_kids)
            decision, verified = check(source, token, config)
            assert decision.allowed and verified.key_id == "rsa-2"
            nursery.cancel_scope.cancel()


async def test_http_get_accepts_only_200():
    site = Site()
    site.put("/gone", b"{}", status=404)
    site.put("/moved", b"{}", status=302, location="https://elsewhere.example/keys")
    with serve(site) as base:
        get = HttpsGetter(timeout=5)
        for path, status in (("/gone", 404), ("/moved", 302)):
            with pytest.raises(FetchError, match=f"HTTP {status}, expected 200"):
                await get(f"{base}{path}")


async def test_http_get_caps_the_body():
    site = Site()
    site.put("/big", b"x" * 2048)
    with serve(site) as base:
        with pytest.raises(FetchError, match="exceeds 1024"):
            await HttpsGetter(max_bytes=1024)(f"{base}/big")
        assert (await HttpsGetter(max_bytes=2048)(f"{base}/big")).body == b"x" * 2048


async def test_http_get_times_out_on_a_silent_issuer():
    with silent_listener() as port:
        url = f"http://127.0.0.1:{port}/jwks.json"
        with trio.fail_after(5), pytest.raises(FetchError, match=r"timed out after 0\.3 s"):
            await HttpsGetter(timeout=0.3)(url)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for ``localhost`` that no system CA store vouches for."""
    cert, key = build_cert(dns=("localhost",))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, directory / "cert.pem"


async def test_https_fetch_checks_the_certificate_against_the_trust_store(issuer, tls_files):
    server_context, cert_path = tls_files
    site = Site()
    site.put("/jwks.json", issuer.jwks(issuer.rsa))
    with serve(site, tls=server_context) as base:
        url = f"{base}/jwks.json"
        default = HttpsGetter(timeout=5)  # system CAs, hostname checked
        assert default.ssl_context.check_hostname
        assert default.ssl_context.verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            await default(url)
        trusting = HttpsGetter(timeout=5, ssl_context=ssl.create_default_context(cafile=cert_path))
        result = await trusting(url)
        assert json.loads(result.body)["keys"][0]["kid"] == "rsa-1"
        # the same certificate, reached by a name it does not carry, is refused
        with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
            await trusting(url.replace("localhost", "127.0.0.1"))
    assert site.hits["/jwks.json"] == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["max-age=300"], 300.0),
        (["public, MAX-AGE = 900, must-revalidate"], 900.0),
        (['max-age="60"'], 60.0),
        (["public", "max-age=120"], 120.0),
        (["no-store, max-age=300"], None),
        (["no-cache"], None),
        (["max-age=abc"], None),
        (["s-maxage=500"], None),
    ],
)
def test_cache_control_max_age(values, expected):
    headers = [(b"cache-control", v.encode()) for v in values]
    assert cache_control_max_age(headers) == expected


# -- in memory, on the autojump clock -------------------------------------------------------------


def memory_source(site: Site, **kw) -> JwksSource:
    return JwksSource(make_config(jwks_url=JWKS_URL, **kw), fetch=site.fetch)


async def test_rotation_is_picked_up_at_once_after_an_unknown_kid(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = memory_source(site)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        await trio.sleep(90)  # past min_refresh_on_miss (10 s), well before the 600 s refresh
        site.put(JWKS_PATH, issuer.jwks(issuer.rsa, issuer.rsa_next))
        token = issuer.mint(key=issuer.rsa_next)
        decision, _ = check(source, token, source.config)
        assert decision.rule == "kid_unknown" and refresh_may_help(decision)
        asked_at = trio.current_time()
        assert source.request_refresh(unverified_kid(token)) is True
        await wait_for(lambda: site.hits[JWKS_PATH] == 2)
        assert trio.current_time() - asked_at < 0.1  # prompt: not at the next periodic refresh
        decision, verified = check(source, token, source.config)
        assert decision.allowed and verified.key_id == "rsa-2"
        nursery.cancel_scope.cancel()


async def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = memory_source(site)
    scheduled = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        start = trio.current_time()
        for n in range(1100):  # two made-up kids a second for 550 s
            scheduled += source.request_refresh(f"forged-{n}")
            await trio.sleep(0.5)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert elapsed < 600  # so no periodic refresh is due: every extra hit is a miss refresh
    assert scheduled == site.hits[JWKS_PATH] - 1
    interval = source.min_refresh_on_miss  # the component's unknownKidRefreshInterval
    assert 1 + scheduled <= 1 + math.ceil(elapsed / interval)
    assert scheduled >= elapsed // interval - 1  # and the refreshes did happen, once per interval


async def test_requests_for_a_known_kid_never_refetch(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = memory_source(site)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        await trio.sleep(120)
        assert source.request_refresh("rsa-1") is False
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert site.hits[JWKS_PATH] == 1


async def test_issuer_down_later_keeps_the_cached_keys(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = memory_source(site)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run)
            site.down = True
            await trio.sleep(600 + 5 + 10 + 20 + 40 + 60 + 1)
            keys = source.keys()
            decision, _ = check(source, issuer.mint(), source.config)
            nursery.cancel_scope.cancel()
    assert isinstance(keys, JwksSnapshot) and keys.usable_kids == {"rsa-1"}
    assert decision.allowed
    failures = [e for e in logs if e["event"] == "jwks fetch failed"]
    # the refresh at 600 s, then retries backing off 5, 10, 20, 40, 60 s: 605, 615, 635, 675, 735
    assert len(failures) == 6
    assert all(e["url"] == JWKS_URL and e["keys_kept"] for e in failures)
    assert "Connection refused" in failures[0]["error"]


async def test_a_broken_key_set_does_not_replace_working_keys(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = memory_source(site)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        site.put(JWKS_PATH, {"keys": []})
        await trio.sleep(601)
        assert site.hits[JWKS_PATH] == 2
        assert source.keys().usable_kids == {"rsa-1"}
        nursery.cancel_scope.cancel()


async def test_cache_control_max_age_stretches_the_refresh(issuer, autojump_clock):
    site = Site()
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa), cache_control="max-age=1800")
    source = memory_source(site)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        await trio.sleep(1799)
        assert site.hits[JWKS_PATH] == 1
        await trio.sleep(2)
        assert site.hits[JWKS_PATH] == 2
        nursery.cancel_scope.cancel()


async def test_a_hung_issuer_does_not_hang_start_up(autojump_clock):
    async def never(url: str):
        await trio.sleep_forever()

    source = JwksSource(make_config(jwks_url=JWKS_URL), fetch=never, timeout=10)
    async with trio.open_nursery() as nursery:
        began = trio.current_time()
        await nursery.start(source.run)
        assert trio.current_time() - began == pytest.approx(10)
        keys = source.keys()
        nursery.cancel_scope.cancel()
    assert isinstance(keys, KeysUnavailable)
    assert keys.error == f"GET {JWKS_URL} timed out after 10 s"


async def test_discovery_retries_until_the_issuer_comes_up(issuer, autojump_clock):
    site = Site()
    site.down = True
    site.put(
        "/realms/mesh/.well-known/openid-configuration",
        {"issuer": ISSUER, "jwks_uri": JWKS_URL},
    )
    site.put(JWKS_PATH, issuer.jwks(issuer.rsa))
    source = JwksSource(make_config(), fetch=site.fetch)
    async with trio.open_nursery() as nursery:
        await nursery.start(source.run)
        keys = source.keys()
        assert isinstance(keys, KeysUnavailable) and "Connection refused" in keys.error
        assert source.request_refresh("rsa-1") is False  # nothing to refresh yet
        site.down = False
        await trio.sleep(5.5)  # the first discovery retry
        assert source.jwks_url == JWKS_URL
        assert isinstance(source.keys(), JwksSnapshot)
        nursery.cancel_scope.cancel()
