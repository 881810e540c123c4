"""Renewal keeps serving through a CA outage and backs off; time runs on trio's autojump clock."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import trio

from ca._errors import CAError
from identity import AppIdentity
from sidecar import ca_worker, identity_source
from sidecar.identity_source import IdentityHolder, renew_forever
from tests._support.pki import issue, utcnow


class CADown(CAError):
    http_status = 503


async def test_renewal_retries_with_backoff_and_keeps_the_current_svid(
    mesh_ca, monkeypatch, autojump_clock
):
    me = AppIdentity("public", "default", "svc")
    holder = IdentityHolder(me)
    # Issued 50 minutes ago for an hour: past its half-life, so renewal is due now.
    first = issue(
        mesh_ca, "svc", ttl=dt.timedelta(hours=1), now=utcnow() - dt.timedelta(minutes=50)
    )
    holder.install(first, mesh_ca.bundle)
    holder.installed_at = utcnow() - dt.timedelta(minutes=50)
    attempts: list[float] = []
    fresh = issue(mesh_ca, "svc", ttl=dt.timedelta(hours=1))

    async def renew(url, current, bundle):
        attempts.append(trio.current_time())
        assert current is first  # renewal presents the SVID in force
        if len(attempts) < 4:
            raise CADown("CA unreachable")
        return fresh, mesh_ca.bundle

    monkeypatch.setattr(ca_worker, "renew_svid", renew)
    with trio.move_on_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(renew_forever, holder, "https://ca.invalid")
            while holder.renewals == 0:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert holder.current.svid is fresh
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == pytest.approx([1.0, 2.0, 4.0], abs=0.01)  # exponential back-off
    assert holder.last_error is None  # cleared by the successful renewal


async def test_failed_renewal_is_reported_and_the_old_svid_keeps_serving(
    mesh_ca, monkeypatch, autojump_clock
):
    holder = IdentityHolder(AppIdentity("public", "default", "svc"))
    past = utcnow() - dt.timedelta(minutes=50)
    current = issue(mesh_ca, "svc", ttl=dt.timedelta(hours=1), now=past)
    holder.install(current, mesh_ca.bundle)
    holder.installed_at = past

    async def renew(url, svid, bundle):
        raise CADown("connection refused")

    monkeypatch.setattr(ca_worker, "renew_svid", renew)
    with trio.move_on_after(30):
        await renew_forever(holder, "https://ca.invalid")
    assert holder.current.svid is current
    assert "connection refused" in holder.last_error


def test_short_lived_svids_renew_half_way_through_what_is_left(mesh_ca):
    """Leaves are back-dated 15 minutes, so from notBefore a 60 s SVID would renew at once."""
    now = utcnow()
    svid = issue(mesh_ca, "svc", ttl=dt.timedelta(seconds=60), now=now)
    assert svid.renewal_time() < now  # the naive midpoint is already past
    assert svid.renewal_time(now) == now + (svid.not_after - now) / 2
    assert identity_source.MIN_RENEWAL_DELAY >= 1.0
