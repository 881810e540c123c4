"""A signed token whose ``exp`` is an integer no double can hold is refused, not a crash.

JSON numbers are unbounded and Python reads a 400-digit ``exp`` as an int; the claim check
turned it into a float to compare it with the clock, which raised OverflowError out of the
judge: the request got no answer (its connection dropped, the caller's sidecar saying 502)
and no audit record. The same held for ``nbf`` and ``iat``. Such a claim is now refused as
not a finite number (401 claim_invalid). Twin: a token valid for minutes is served.

Through real sidecars (the ``world`` of test_bearer_token_on_streams: a caller's sidecar,
mutual TLS, a server sidecar with a bearer component whose issuer this module serves).
"""

from __future__ import annotations

import httpx
import pytest

from tests._support.jose_mint import claims, sign
from tests.security.test_bearer_token_on_streams import AUDIENCE, world

pytestmark = pytest.mark.e2e

assert world  # the fixture, imported for its use below


def _call(world, **overrides) -> httpx.Response:
    payload = claims(world["issuer"], AUDIENCE, "alice") | overrides
    url = f"{world['client'].url()}/v1.0/invoke/server/method/echo"
    headers = {"authorization": f"Bearer {sign(world['key'], payload)}"}
    return httpx.post(url, headers=headers, content=b"{}", timeout=15)


def _count(world) -> int:
    return httpx.get(f"http://127.0.0.1:{world['app'].ready['port']}/count", timeout=5).json()[
        "count"
    ]


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_token_with_a_time_claim_beyond_a_double_is_refused(world, claim):
    before = _count(world)
    reply = _call(world, **{claim: 10**400})
    assert reply.status_code == 401, reply.text
    assert reply.json()["check"] == "claim_invalid", reply.text
    assert _count(world) == before  # the app never saw it


def test_twin_a_token_valid_for_minutes_is_served(world):
    before = _count(world)
    reply = _call(world)
    assert reply.status_code == 200, reply.text
    assert _count(world) == before + 1
