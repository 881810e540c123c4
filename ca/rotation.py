"""Replacing the bundled CA without an outage: prepare, activate, retire.

A peer trusts an SVID only if the SVID's chain leads to a root in the peer's trust bundle, and a
sidecar gets its bundle with each SVID it renews (at half its lifetime). So a new CA cannot
simply take over: peers that have not renewed yet would refuse the SVIDs it signs, and peers
that have would refuse the old ones. It takes three steps, each one command, each waiting until
the previous one has reached every sidecar (one SVID lifetime: every sidecar renews within it,
and every SVID signed before it has expired by then):

1. ``prepare``: a new root and issuer (same trust domain) are made and kept in ``ca/next/``;
   the bundle holds both roots. The old CA still signs; sidecars learn the new root as they
   renew.
2. ``activate``: the new CA signs; the old root stays in the bundle, so the SVIDs it signed
   are trusted until they expire.
3. ``retire``: the old root leaves the bundle; sidecars drop it at their next renewal (and end
   the connections that were verified under it, see ``sidecar.identity_source``).

``abort`` undoes a ``prepare`` (nothing has signed with the new CA yet). A running
``trustmesh ca serve`` picks each step up from the files (:mod:`.server`). The phase and when it
began are kept in ``ca/rotation.json``; every step runs under the CA's lock.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import dataclass

from identity import TrustBundle, atomic_write, certificates_to_pem, private_key_to_pem

from ._authority import DEFAULT_CA_TTL, CertificateAuthority
from ._duration import format_duration
from ._errors import CAStorageError, RotationRefused
from .home import PRIVATE_FILE_MODE, CALayout, locked
from .store import load_bundle, load_ca, save_ca

NONE, PREPARED, ACTIVATED = "none", "prepared", "activated"


@dataclass(frozen=True)
class Rotation:
    phase: str  # NONE, PREPARED or ACTIVATED
    since: dt.datetime | None = None  # when that phase began

    def next_step_at(self, wait: dt.timedelta) -> dt.datetime | None:
        return None if self.since is None else self.since + wait


def rotation_state(layout: CALayout) -> Rotation:
    try:
        document = json.loads(layout.rotation.read_text())
        phase, since = document["phase"], dt.datetime.fromisoformat(document["since"])
    except FileNotFoundError:
        return Rotation(NONE)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CAStorageError(f"{layout.rotation} is unreadable: {exc}") from exc
    if phase not in (PREPARED, ACTIVATED):
        raise CAStorageError(f"{layout.rotation}: unknown phase {phase!r}")
    if since.tzinfo is None:  # compared with an aware "now", it would raise deep in a step
        raise CAStorageError(f"{layout.rotation}: 'since' {document['since']!r} has no UTC offset")
    return Rotation(phase, since)


def record_svid_lifetime(layout: CALayout, ttl: dt.timedelta) -> None:
    """Remember that SVIDs of ``ttl`` are being issued (``ca serve`` at start), keeping the
    longest: SVIDs of an earlier, longer-lived serve may still be out there."""
    with locked(layout.lock):
        if ttl <= (recorded_svid_lifetime(layout) or dt.timedelta(0)):
            return
        document = {"seconds": int(ttl.total_seconds())}
        try:
            atomic_write(layout.svid_lifetime, (json.dumps(document) + "\n").encode())
        except OSError as exc:
            raise CAStorageError(f"cannot write {layout.svid_lifetime}: {exc}") from exc


def recorded_svid_lifetime(layout: CALayout) -> dt.timedelta | None:
    try:
        seconds = json.loads(layout.svid_lifetime.read_text())["seconds"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CAStorageError(f"{layout.svid_lifetime} is unreadable: {exc}") from exc
    if not isinstance(seconds, int) or isinstance(seconds, bool) or seconds <= 0:
        raise CAStorageError(f"{layout.svid_lifetime}: 'seconds' must be a positive integer")
    return dt.timedelta(seconds=seconds)


def step_wait(layout: CALayout, svid_ttl: dt.timedelta) -> dt.timedelta:
    """One SVID lifetime: the longer of the one given and the longest ``ca serve`` has issued
    with here. A serve issuing 7-day SVIDs with steps waiting the default day would activate
    before sidecars renewing every 3.5 days had learnt the new root."""
    return max(svid_ttl, recorded_svid_lifetime(layout) or dt.timedelta(0))


def prepare(
    layout: CALayout, *, now: dt.datetime, ttl: dt.timedelta = DEFAULT_CA_TTL
) -> CertificateAuthority:
    """Make the CA that will replace the current one, and trust its root beside the old one."""
    with locked(layout.lock):
        _expect(layout, NONE, "prepare")
        current = load_ca(layout)
        new = CertificateAuthority.create(current.trust_domain, now=now, ttl=ttl)
        save_ca(layout.next, new, force=True)  # a leftover of an interrupted prepare goes
        # The phase before the bundle: interrupted between the two, 'abort' can still undo it.
        # The other way round, the bundle would trust a root no step knows about, to retire.
        _write_state(layout, PREPARED, now)
        _write_bundle(layout, TrustBundle([current.root_cert, new.root_cert]))
        return new


def activate(
    layout: CALayout, *, now: dt.datetime, wait: dt.timedelta, force: bool = False
) -> CertificateAuthority:
    """Sign with the prepared CA from now on; the old root stays trusted."""
    with locked(layout.lock):
        state = _expect(layout, PREPARED, "activate")
        wait = step_wait(layout, wait)
        _check_wait(state, now, wait, force, "prepare", "activate", "learnt the new root")
        new = load_ca(layout.next)
        _check_outlives_rotation(new, now, wait)
        if new.root_cert not in load_bundle(layout).authorities:
            raise CAStorageError(
                f"{layout.bundle} does not hold the prepared root; "
                "'trustmesh ca rotate abort' and prepare again"
            )
        # Four files, each replaced whole; the phase changes only once all are written, so an
        # interrupted activate is finished by running it again.
        try:
            atomic_write(layout.root_key, private_key_to_pem(new.root_key), PRIVATE_FILE_MODE)
            atomic_write(layout.issuer_key, private_key_to_pem(new.issuer_key), PRIVATE_FILE_MODE)
            atomic_write(layout.root_cert, certificates_to_pem([new.root_cert]))
            atomic_write(layout.issuer_cert, certificates_to_pem([new.issuer_cert]))
        except OSError as exc:
            raise CAStorageError(f"cannot write the CA in {layout.directory}: {exc}") from exc
        _write_state(layout, ACTIVATED, now)
        _remove_next(layout)
        return new


def retire(
    layout: CALayout, *, now: dt.datetime, wait: dt.timedelta, force: bool = False
) -> TrustBundle:
    """Trust only the current root: the old one leaves the bundle."""
    with locked(layout.lock):
        state = _expect(layout, ACTIVATED, "retire")
        wait = step_wait(layout, wait)
        _check_wait(state, now, wait, force, "activate", "retire", "renewed under the new CA")
        return _trust_the_current_root_only(layout)


def abort(layout: CALayout) -> TrustBundle:
    """Undo ``prepare``: the new root leaves the bundle and the prepared CA is deleted."""
    with locked(layout.lock):
        _expect(layout, PREPARED, "abort")
        bundle = _trust_the_current_root_only(layout)
        _remove_next(layout)
        return bundle


def forget(layout: CALayout) -> None:
    """End any rotation without a step: ``ca init --force`` replaced the CA it was replacing."""
    with locked(layout.lock):
        _clear_state(layout)
        _remove_next(layout)


_NEXT_STEP = {NONE: "prepare", PREPARED: "activate", ACTIVATED: "retire"}


def _expect(layout: CALayout, phase: str, step: str) -> Rotation:
    state = rotation_state(layout)
    if state.phase != phase:
        if state.phase == NONE:
            raise RotationRefused("no rotation is under way: run 'trustmesh ca rotate prepare'")
        raise RotationRefused(
            f"cannot {step}: the rotation was {state.phase} at {_when(state.since)}; "
            f"the next step is 'trustmesh ca rotate {_NEXT_STEP[state.phase]}'"
        )
    return state


def _check_wait(
    state: Rotation,
    now: dt.datetime,
    wait: dt.timedelta,
    force: bool,
    previous: str,
    step: str,
    reached: str,
) -> None:
    ready_at = state.next_step_at(wait)
    if force or ready_at is None or now >= ready_at:
        return
    raise RotationRefused(
        f"too early to {step}: sidecars may not all have {reached} since '{previous}' "
        f"({_when(state.since)}); {step} from {_when(ready_at)} "
        f"(one SVID lifetime: {format_duration(wait)}, the longer of --svid-ttl and the "
        f"longest 'ca serve' has issued here), or now with --now"
    )


def _check_outlives_rotation(new: CertificateAuthority, now: dt.datetime, wait: dt.timedelta):
    """The CA about to sign must last until ``retire`` and one SVID lifetime past it: one
    prepared long ago (or with a short ``--ttl``) would otherwise sign SVIDs cut short at its own
    end, and then nothing, with the old root about to be retired. ``--now`` does not skip this."""
    if new.not_after < now + 2 * wait:
        raise RotationRefused(
            f"the prepared CA expires at {_when(new.not_after)}, before two SVID lifetimes "
            f"({format_duration(wait)} each) from now: it would not outlive retire; "
            f"'trustmesh ca rotate abort', then prepare one with a longer --ttl"
        )


def _when(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _trust_the_current_root_only(layout: CALayout) -> TrustBundle:
    """The end of a rotation (retired or aborted): the bundle holds the signing CA's root alone,
    then the phase is cleared (interrupted between the two, the same step finishes it)."""
    bundle = TrustBundle([load_ca(layout).root_cert])
    _write_bundle(layout, bundle)
    _clear_state(layout)
    return bundle


def _write_bundle(layout: CALayout, bundle: TrustBundle) -> None:
    try:
        atomic_write(layout.bundle, bundle.to_pem())
    except OSError as exc:
        raise CAStorageError(f"cannot write {layout.bundle}: {exc}") from exc


def _write_state(layout: CALayout, phase: str, since: dt.datetime) -> None:
    document = {"phase": phase, "since": since.isoformat()}
    try:
        atomic_write(layout.rotation, (json.dumps(document) + "\n").encode())
    except OSError as exc:
        raise CAStorageError(f"cannot write {layout.rotation}: {exc}") from exc


def _clear_state(layout: CALayout) -> None:
    try:
        layout.rotation.unlink(missing_ok=True)
    except OSError as exc:
        raise CAStorageError(f"cannot remove {layout.rotation}: {exc}") from exc


def _remove_next(layout: CALayout) -> None:
    try:
        shutil.rmtree(layout.next.directory, ignore_errors=False)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CAStorageError(f"cannot remove {layout.next.directory}: {exc}") from exc
