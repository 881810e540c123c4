"""Throw-away PKI for tests: a CA per test session and SVIDs on demand."""

from __future__ import annotations

import datetime as dt

from ca import CertificateAuthority
from identity import AppIdentity, X509Svid


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(trust_domain: str = "public") -> CertificateAuthority:
    return CertificateAuthority.create(trust_domain, now=utcnow())


def issue(
    ca: CertificateAuthority,
    app_id: str,
    namespace: str = "default",
    ttl: dt.timedelta = dt.timedelta(hours=1),
    now: dt.datetime | None = None,
) -> X509Svid:
    identity = AppIdentity(ca.trust_domain, namespace, app_id)
    return ca.issue(identity, now=now or utcnow(), ttl=ttl)
