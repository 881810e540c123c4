"""The signing service's decisions without sockets: request in, response out."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509

from ca import InvalidCSR, WeakKey, new_private_key
from ca.csr import build_csr, public_key_from_csr
from ca.home import CALayout
from ca.service import ApiRequest, SigningService
from ca.tokens import TokenStore
from identity import AppIdentity, leaf_app_identity
from tests._support.csrs import csr_claiming, secp256k1_csr, tampered_csr, weak_rsa_csr

NOW = dt.datetime.now(dt.UTC)
WEB = AppIdentity("public", "default", "web")


@pytest.fixture
def service(tmp_path, mesh_ca) -> SigningService:
    return SigningService(mesh_ca, TokenStore(CALayout(tmp_path)), clock=lambda: NOW)


def _token(service: SigningService, identity: AppIdentity = WEB) -> str:
    return service.tokens.issue(identity, now=NOW, ttl=dt.timedelta(minutes=10))


def _post(service, body: bytes, *, token=None, peer=None, auth=None):
    authorization = auth if auth is not None else (f"Bearer {token}" if token else None)
    response = service.handle(ApiRequest("POST", "/v1/svid", authorization, body, peer))
    return response.status, json.loads(response.body)


def _leaf(document: dict) -> x509.Certificate:
    return x509.load_pem_x509_certificates(document["svid"].encode())[0]


def test_csr_claiming_another_identity_gets_the_tokens_identity(service) -> None:
    status, doc = _post(
        service, csr_claiming("spiffe://public/ns/default/admin"), token=_token(service)
    )
    assert status == 200
    assert doc["spiffe_id"] == str(WEB) and leaf_app_identity(_leaf(doc)) == WEB


def test_renewal_keeps_the_peer_identity(service) -> None:
    status, doc = _post(service, build_csr(new_private_key()), peer=WEB)
    assert status == 200 and leaf_app_identity(_leaf(doc)) == WEB


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        (b"", 400, "CSR_MALFORMED", "not a PEM certificate request"),
        (b"hello", 400, "CSR_MALFORMED", "not a PEM certificate request"),
        (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            400,
            "CSR_MALFORMED",
            "does not parse",
        ),
        (weak_rsa_csr(), 400, "WEAK_KEY", "RSA key of 1024 bits is too weak"),
        (secp256k1_csr(), 400, "WEAK_KEY", "elliptic curve secp256k1 is not allowed"),
        (tampered_csr(), 400, "CSR_SIGNATURE_INVALID", "signature does not verify"),
    ],
    ids=["empty", "garbage", "bad-der", "rsa-1024", "secp256k1", "tampered-signature"],
)
def test_bad_csrs_are_refused_and_do_not_burn_the_token(service, body, status, code, fragment):
    token = _token(service)
    got_status, doc = _post(service, body, token=token)
    assert (got_status, doc["errorCode"]) == (status, code)
    assert fragment in doc["message"]
    assert _post(service, build_csr(new_private_key()), token=token)[0] == 200


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({}, "UNAUTHENTICATED"),
        ({"auth": "Basic d2ViOndlYg=="}, "UNAUTHENTICATED"),
        ({"auth": "Bearer "}, "UNAUTHENTICATED"),
        ({"auth": "Bearer tmjoin_" + "A" * 43}, "TOKEN_INVALID"),
        ({"auth": "Bearer tmjoin_" + "A" * 43, "peer": WEB}, "UNAUTHENTICATED"),
    ],
    ids=["nothing", "basic-auth", "empty-bearer", "unknown-token", "token-and-cert"],
)
def test_unauthenticated_requests_get_401(service, kwargs, code) -> None:
    status, doc = _post(service, build_csr(new_private_key()), **kwargs)
    assert (status, doc["errorCode"]) == (401, code)


def test_control_plane_identity_is_never_issued(service) -> None:
    ca_id = AppIdentity("public", "trustmesh-system", "trustmesh-ca")
    status, doc = _post(service, build_csr(new_private_key()), token=_token(service, ca_id))
    assert (status, doc["errorCode"]) == (403, "RESERVED_IDENTITY")
    status, doc = _post(service, build_csr(new_private_key()), peer=ca_id)
    assert (status, doc["errorCode"]) == (403, "RESERVED_IDENTITY")


def test_foreign_trust_domain_peer_is_refused(service) -> None:
    status, doc = _post(
        service, build_csr(new_private_key()), peer=AppIdentity("evil", "default", "web")
    )
    assert (status, doc["errorCode"]) == (400, "SIGNING_REFUSED")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/svid", 405, "METHOD_NOT_ALLOWED"),
        ("POST", "/v1/bundle", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/v1/nope", 404, "NOT_FOUND"),
        ("GET", "/", 404, "NOT_FOUND"),
    ],
)
def test_routes(service, method, path, status, code) -> None:
    response = service.handle(ApiRequest(method, path))
    assert (response.status, json.loads(response.body)["errorCode"]) == (status, code)
    if status == 405:
        assert ("allow", "POST" if path == "/v1/svid" else "GET") in response.headers


def test_bundle_endpoint(service, mesh_ca) -> None:
    response = service.handle(ApiRequest("GET", "/v1/bundle"))
    doc = json.loads(response.body)
    assert response.status == 200 and doc["bundle"].encode() == mesh_ca.bundle.to_pem()


def test_csr_helpers_directly() -> None:
    with pytest.raises(WeakKey):
        public_key_from_csr(weak_rsa_csr())
    with pytest.raises(InvalidCSR, match="exactly one"):
        public_key_from_csr(build_csr(new_private_key()) * 2)
    assert public_key_from_csr(build_csr(new_private_key("ed25519")))
