"""Who a certificate names: refusals for every leaf shape that must not become an identity."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from identity import AppIdentity, PeerIdentityError, SvidError, X509Svid, peer_identity
from tests._support.certs import build_cert

APP = "spiffe://public/ns/default/web"


def test_a_leaf_with_one_app_uri_names_that_app() -> None:
    cert, _ = build_cert(uris=(APP,), dns=("web.local",))
    assert peer_identity(cert) == AppIdentity("public", "default", "web")
    assert peer_identity(cert.public_bytes(serialization.Encoding.DER)) == AppIdentity(
        "public", "default", "web"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"san": False, "uris": (APP,)}, "certificate has no subjectAltName, so no SPIFFE ID"),
        ({"dns": ("web.local",)}, "certificate must carry exactly one URI SAN, found 0"),
        (
            {"uris": (APP, "spiffe://public/ns/default/admin")},
            "certificate must carry exactly one URI SAN, found 2",
        ),
        ({"uris": (APP,), "ca": True}, "certificate is a CA certificate, not a workload leaf"),
        (
            {"uris": ("https://public/ns/default/web",)},
            "certificate URI SAN is not a SPIFFE ID: 'https://public/ns/default/web'",
        ),
        (
            {"uris": ("spiffe://public/workload",)},
            "certificate SPIFFE ID is not an App ID: spiffe://public/workload is not an App ID: "
            "expected spiffe://<trust-domain>/ns/<namespace>/<app-id>, "
            ".../ns/<namespace>/sa/<service-account>, or an AppIdentityBinding",
        ),
        (
            {"uris": ("spiffe://public/ns/default/web?admin=1",)},
            "certificate SPIFFE ID is not an App ID: SPIFFE ID cannot contain a query",
        ),
        (
            {"uris": ("spiffe://Public/ns/default/web",)},
            "certificate SPIFFE ID is not an App ID: trust domain characters are limited to "
            "lowercase letters, numbers, dots, dashes, and underscores: 'Public'",
        ),
    ],
    ids=[
        "no-san",
        "zero-uri-sans",
        "two-uri-sans",
        "ca-cert-as-leaf",
        "non-spiffe-uri",
        "non-app-path",
        "query-smuggling",
        "uppercase-trust-domain",
    ],
)
def test_refused_leaf_shapes(kwargs: dict, message: str) -> None:
    cert, _ = build_cert(**kwargs)
    with pytest.raises(PeerIdentityError) as caught:
        peer_identity(cert)
    assert str(caught.value) == message


def test_garbage_der_is_refused() -> None:
    with pytest.raises(PeerIdentityError, match="peer certificate does not parse"):
        peer_identity(b"\x30\x03garbage")


def test_svid_refuses_a_key_that_is_not_the_leafs() -> None:
    cert, _ = build_cert(uris=(APP,))
    _, other_key = build_cert(uris=(APP,))
    with pytest.raises(SvidError, match="private key does not match the leaf"):
        X509Svid((cert,), other_key)


def test_svid_refuses_a_leaf_without_an_app_identity() -> None:
    cert, key = build_cert(uris=("spiffe://public/workload",))
    with pytest.raises(PeerIdentityError, match="not an App ID"):
        X509Svid((cert,), key)
