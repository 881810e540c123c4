"""The identity holder tells its listeners when a new trust bundle drops a CA, and only then."""

from __future__ import annotations

from identity import AppIdentity, TrustBundle
from sidecar.identity_source import IdentityHolder
from tests._support.pki import issue, make_ca


def _holder(ca):
    holder = IdentityHolder(AppIdentity("public", "default", "server"))
    calls: list[str] = []
    holder.on_trust_narrowed.append(lambda: calls.append("retire"))
    return holder, calls, issue(ca, "server")


def test_a_bundle_that_drops_a_ca_retires_connections(mesh_ca):
    other = make_ca("public")
    holder, calls, svid = _holder(mesh_ca)
    holder.install(svid, TrustBundle.from_pem(mesh_ca.bundle.to_pem() + other.bundle.to_pem()))
    holder.install(svid, mesh_ca.bundle)
    assert calls == ["retire"]


def test_twin_renewals_and_added_cas_retire_nothing(mesh_ca):
    other = make_ca("public")
    holder, calls, svid = _holder(mesh_ca)
    holder.install(svid, mesh_ca.bundle)
    holder.install(issue(mesh_ca, "server"), TrustBundle.from_pem(mesh_ca.bundle.to_pem()))
    holder.install(svid, TrustBundle.from_pem(mesh_ca.bundle.to_pem() + other.bundle.to_pem()))
    assert calls == []


def test_authorities_compare_by_certificate_not_by_spelling(mesh_ca):
    pem = mesh_ca.bundle.to_pem()
    spaced = TrustBundle.from_pem(b"\n\n" + pem.replace(b"\n", b"\r\n"))
    assert spaced.authority_ders() == mesh_ca.bundle.authority_ders()
