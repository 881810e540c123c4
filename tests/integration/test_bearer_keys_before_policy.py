"""A new bearer component's keys are awaited before its policy goes into force, for at most
``WARM_TIMEOUT``: an issuer that hangs cannot hold a policy (and the revocations it brings) out
of force for longer; one that answers has its keys in place before the first request is judged.
"""

from __future__ import annotations

import pytest
import trio

from sidecar.bearer import JwksSnapshot, KeysUnavailable
from sidecar.proxy.bearer_gate import WARM_TIMEOUT, BearerKeySources
from tests._support.bearer import Issuer, make_config
from tests._support.jwks_site import Site, serve, silent_listener

pytestmark = pytest.mark.trio


async def test_a_hung_issuer_delays_the_policy_by_the_warm_bound_and_no_longer(autojump_clock):
    with silent_listener() as port:  # accepts, never answers: the fetch's own 10 s would pass
        config = make_config(jwks_url=f"http://127.0.0.1:{port}/jwks.json")
        async with trio.open_nursery() as nursery:
            sources = BearerKeySources(nursery)
            start = trio.current_time()
            await sources.warm(config)
            assert trio.current_time() - start == pytest.approx(WARM_TIMEOUT)
            assert isinstance(sources.ensure(config).keys(), KeysUnavailable)
            nursery.cancel_scope.cancel()


async def test_an_answering_issuer_has_its_keys_in_place_when_the_wait_ends():
    issuer = Issuer()
    site = Site()
    site.put("/jwks.json", issuer.jwks())
    with serve(site) as base:
        config = make_config(jwks_url=f"{base}/jwks.json")
        async with trio.open_nursery() as nursery:
            sources = BearerKeySources(nursery)
            with trio.fail_after(WARM_TIMEOUT * 2):
                await sources.warm(config)
            keys = sources.ensure(config).keys()
            assert isinstance(keys, JwksSnapshot), keys
            assert site.hits["/jwks.json"] == 1
            nursery.cancel_scope.cancel()
