"""Issued SVIDs checked by code that is not ours: ``openssl verify`` and py-spiffe.

Also proves the root's URI name constraint bites: a leaf for another trust domain, signed by our
own issuer key behind the CA's back, is rejected by OpenSSL's chain verification.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
import spiffe
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from identity import (
    AppIdentity,
    certificates_to_pem,
    load_svid_dir,
    save_svid_dir,
)
from tests._support.certs import build_cert
from tests._support.pki import issue


def _openssl_verify(tmp_path, bundle_pem: bytes, issuer_pem: bytes, leaf_pem: bytes):
    (tmp_path / "bundle.pem").write_bytes(bundle_pem)
    (tmp_path / "issuer.pem").write_bytes(issuer_pem)
    (tmp_path / "leaf.pem").write_bytes(leaf_pem)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            str(tmp_path / "bundle.pem"),
            "-untrusted",
            str(tmp_path / "issuer.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_svid_dir_round_trip_with_private_key(tmp_path, mesh_ca) -> None:
    svid = issue(mesh_ca, "web")
    save_svid_dir(tmp_path / "svid", svid, mesh_ca.bundle)
    assert (tmp_path / "svid" / "svid.key").stat().st_mode & 0o777 == 0o600
    loaded, bundle = load_svid_dir(tmp_path / "svid")
    assert loaded.chain == svid.chain and bundle == mesh_ca.bundle
    assert loaded.identity == AppIdentity("public", "default", "web")


def test_cert_manager_layout_is_read_too(tmp_path, mesh_ca) -> None:
    svid = issue(mesh_ca, "web")
    (tmp_path / "tls.crt").write_bytes(svid.chain_pem())
    (tmp_path / "tls.key").write_bytes(svid.key_pem())
    (tmp_path / "ca.crt").write_bytes(mesh_ca.bundle.to_pem())
    assert load_svid_dir(tmp_path)[0].identity == svid.identity


def test_issued_svid_passes_openssl_verify(tmp_path, mesh_ca) -> None:
    svid = issue(mesh_ca, "web")
    result = _openssl_verify(
        tmp_path, mesh_ca.bundle.to_pem(), _pem(mesh_ca.issuer_cert), _pem(svid.leaf)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("key_type", ["ec-p256", "ed25519"])
def test_issued_svid_parses_with_py_spiffe(tmp_path, mesh_ca, key_type) -> None:
    identity = AppIdentity("public", "prod", "checkout")
    svid = mesh_ca.issue(identity, now=dt.datetime.now(dt.UTC), key_type=key_type)
    save_svid_dir(tmp_path, svid, mesh_ca.bundle)
    theirs = spiffe.X509Svid.load(
        tmp_path / "svid.pem", tmp_path / "svid.key", serialization.Encoding.PEM
    )
    assert str(theirs.spiffe_id) == "spiffe://public/ns/prod/checkout"
    assert len(theirs.cert_chain) == 2
    bundle = spiffe.X509Bundle.load(
        spiffe.TrustDomain("public"), tmp_path / "bundle.pem", serialization.Encoding.PEM
    )
    assert bundle.x509_authorities == {mesh_ca.root_cert}


def test_leaf_profile(mesh_ca) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    leaf = mesh_ca.issue(AppIdentity("public", "default", "web"), now=now).leaf
    ext = leaf.extensions
    assert leaf.subject == x509.Name([])
    assert ext.get_extension_for_class(x509.SubjectAlternativeName).critical
    assert not ext.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ext.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert leaf.not_valid_before_utc == now - dt.timedelta(minutes=15)
    assert leaf.not_valid_after_utc == now + dt.timedelta(hours=24)
    assert leaf.serial_number.bit_length() <= 159


def _forged_leaf(mesh_ca, spiffe_id: str) -> x509.Certificate:
    """Sign with our issuer's key directly, bypassing CertificateAuthority's domain check."""
    cert, _ = build_cert(
        uris=(spiffe_id,), issuer_cert=mesh_ca.issuer_cert, issuer_key=mesh_ca.issuer_key
    )
    return cert


def test_name_constraint_rejects_a_leaf_for_another_trust_domain(tmp_path, mesh_ca) -> None:
    # Control: the same hand-built shape inside our domain verifies, so the failure below is
    # the constraint and not the construction.
    inside = _forged_leaf(mesh_ca, "spiffe://public/ns/default/web")
    ok = _openssl_verify(tmp_path, mesh_ca.bundle.to_pem(), _pem(mesh_ca.issuer_cert), _pem(inside))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    outside = _forged_leaf(mesh_ca, "spiffe://evil.example/ns/default/web")
    bad = _openssl_verify(
        tmp_path, mesh_ca.bundle.to_pem(), _pem(mesh_ca.issuer_cert), _pem(outside)
    )
    assert bad.returncode != 0
    assert "permitted subtree violation" in bad.stdout + bad.stderr


def test_svid_chain_file_is_leaf_then_issuer(mesh_ca) -> None:
    svid = issue(mesh_ca, "web")
    assert svid.chain_pem() == certificates_to_pem([svid.leaf, mesh_ca.issuer_cert])
