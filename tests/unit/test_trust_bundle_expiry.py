"""When the mesh's trust ends: the first CA of a bundle to expire, read without an X.509
library, and the warning a sidecar logs from a month ahead."""

from __future__ import annotations

import datetime as dt

from structlog.testing import capture_logs

from ca import CertificateAuthority
from identity import AppIdentity, TrustBundle
from sidecar.identity_source import TRUST_ENDS_WARNING, IdentityHolder
from tests._support.pki import issue, utcnow

APP = AppIdentity("public", "default", "web")


def _ca(days: int) -> CertificateAuthority:
    return CertificateAuthority.create("public", now=utcnow(), ttl=dt.timedelta(days=days))


def test_a_bundle_ends_with_its_first_ca_to_expire():
    soon, later = _ca(40), _ca(400)
    for bundle in (
        TrustBundle([later.root_cert, soon.root_cert]),
        TrustBundle.from_pem(TrustBundle([soon.root_cert, later.root_cert]).to_pem()),
    ):
        assert bundle.expires_at() == soon.root_cert.not_valid_after_utc


def _warnings(ca: CertificateAuthority) -> list[dict]:
    holder = IdentityHolder(APP)
    with capture_logs() as logs:
        holder.install(issue(ca, "web"), ca.bundle)
        holder.install(issue(ca, "web"), ca.bundle)  # a renewal says it again
    return [e for e in logs if "expires soon" in e["event"]]


def test_a_sidecar_warns_at_each_svid_it_installs_within_a_month_of_the_end():
    ca = _ca(TRUST_ENDS_WARNING.days - 1)
    warnings = _warnings(ca)
    assert len(warnings) == 2
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["not_after"] == ca.not_after.isoformat()


def test_a_ca_with_time_left_gives_no_warning():
    assert _warnings(_ca(TRUST_ENDS_WARNING.days + 2)) == []


def test_the_seconds_left_are_the_bundles_not_the_svids():
    ca = _ca(10)
    holder = IdentityHolder(APP)
    assert holder.seconds_until_trust_ends() is None
    holder.install(issue(ca, "web"), ca.bundle)
    left = holder.seconds_until_trust_ends()
    assert dt.timedelta(days=9) < dt.timedelta(seconds=left) <= dt.timedelta(days=10)


def test_a_bundle_holding_an_expired_ca_says_it_has_expired_not_that_it_expires_soon():
    expired = CertificateAuthority.create(
        "public", now=utcnow() - dt.timedelta(days=3), ttl=dt.timedelta(days=1)
    )
    current = _ca(400)
    holder = IdentityHolder(APP)
    with capture_logs() as logs:
        holder.install(issue(current, "web"), TrustBundle([current.root_cert, expired.root_cert]))
    [warning] = [e for e in logs if "trust bundle" in e["event"]]
    assert warning["event"].startswith("a CA of the trust bundle has expired")
    assert warning["not_after"] == expired.not_after.isoformat()
    assert holder.seconds_until_trust_ends() < 0
