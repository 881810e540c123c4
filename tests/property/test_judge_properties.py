"""Properties of the judge's one header place: whatever a caller sends, the app receives the
sidecar's identity headers exactly once, the app token only as the sidecar's, and none of the
caller's copies of anything the sidecar speaks for — in any letter case or ``_`` spelling."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from identity import AppIdentity
from sidecar.judge.forward_headers import to_app

ME = AppIdentity("public", "default", "mcp-server")
CALLER = AppIdentity("public", "prod", "analyst-agent")
APP_TOKEN = b"the-app-token"

SPOKEN_FOR = [
    b"dapr-caller-app-id",
    b"dapr-caller-namespace",
    b"dapr-callee-app-id",
    b"x-forwarded-for",
    b"forwarded",
    b"dapr-api-token",
    b"x-trustmesh-subject",
    b"x-trustmesh-scopes",
    b"host",
]


def spellings(name: bytes):
    return st.sampled_from(
        [name, name.upper(), name.replace(b"-", b"_"), name.title().replace(b"-", b"_")]
    ).map(lambda n: n.lower())  # h11 hands names over lower-cased


header_name = st.one_of(
    st.sampled_from(SPOKEN_FOR).flatmap(spellings),
    st.from_regex(rb"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
)
header = st.tuples(header_name, st.binary(min_size=0, max_size=20).filter(lambda v: b"\n" not in v))


@given(st.lists(header, max_size=12), st.booleans())
def test_the_app_sees_only_the_sidecars_identity_headers(incoming, with_token):
    sent = to_app(
        incoming,
        caller=CALLER,
        me=ME,
        app_address="127.0.0.1:8000",
        peer_host="10.0.0.9",
        app_api_token=APP_TOKEN if with_token else None,
        body=b"{}",
    )
    canon = [(n.replace(b"_", b"-"), v) for n, v in sent]
    expected = {
        b"dapr-caller-app-id": b"analyst-agent",
        b"dapr-caller-namespace": b"prod",
        b"dapr-callee-app-id": b"mcp-server",
        b"x-forwarded-for": b"10.0.0.9",
        b"host": b"127.0.0.1:8000",
        b"content-length": b"2",
    }
    for name, value in expected.items():
        assert [v for n, v in canon if n == name] == [value], name
    tokens = [v for n, v in canon if n == b"dapr-api-token"]
    assert tokens == ([APP_TOKEN] if with_token else [])
    assert not [n for n, _ in canon if n.startswith(b"x-trustmesh-")]
