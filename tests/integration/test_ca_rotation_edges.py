"""``trustmesh ca rotate`` at its edges: a short-lived prepared CA, a step cut short between its
files, and ``ca init --force`` in the middle of a rotation.

What must hold (``ca.rotation``): the CA that ``activate`` makes sign lasts past ``retire``;
every root in the bundle other than the CA's own belongs to a rotation a step can finish or
undo (never one nobody can retire); and a new CA ends any rotation of the one it replaced.
"""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest
from click.testing import CliRunner

from ca import CertificateAuthority, rotation
from ca._errors import CAStorageError, RotationRefused
from ca.cli import ca_group
from ca.home import ca_layout
from ca.store import load_ca, save_ca
from identity import TrustBundle
from tests._support.ca_proc import TRUSTMESH, running_ca
from tests._support.ca_proc import ca_command as tm
from tests._support.ca_proc import trusted_roots as roots
from tests._support.pki import utcnow


@pytest.fixture
def home(tmp_path):
    assert CliRunner().invoke(ca_group, ["init", "--home", str(tmp_path)]).exit_code == 0
    return tmp_path


# -- a prepared CA that would not outlive the rotation ----------------------------------------


def test_activating_a_prepared_ca_that_expires_before_retire_is_refused_in_one_line(home):
    assert tm(home, "rotate", "prepare", "--ttl", "1d").returncode == 0
    before = ca_layout(home).issuer_cert.read_bytes()
    result = tm(home, "rotate", "activate", "--now")  # --now skips the wait, not this
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "would not outlive retire" in result.stderr
    assert "Traceback" not in result.stderr
    assert ca_layout(home).issuer_cert.read_bytes() == before  # the old CA still signs
    assert tm(home, "rotate", "abort").returncode == 0


def test_a_prepared_ca_left_waiting_until_it_nearly_expired_is_not_activated(home):
    layout = ca_layout(home)
    start = utcnow()
    wait = dt.timedelta(hours=24)
    rotation.prepare(layout, now=start, ttl=dt.timedelta(days=2))
    with pytest.raises(RotationRefused, match="would not outlive retire"):
        rotation.activate(layout, now=start + dt.timedelta(days=1, hours=1), wait=wait)
    assert rotation.rotation_state(layout).phase == rotation.PREPARED


def test_a_prepared_ca_valid_past_retire_is_activated(home):
    assert tm(home, "rotate", "prepare", "--ttl", "3d").returncode == 0
    result = tm(home, "rotate", "activate", "--now")
    assert result.returncode == 0, result.stderr


# -- a step cut short between its files -------------------------------------------------------


class Interrupted(BaseException):
    """A crash (kill -9, power loss) at a chosen write: nothing after it runs."""


def _interrupt_write(monkeypatch, nth: int) -> None:
    """Make the ``nth`` file write of the rotation module (0-based) never happen."""
    real, calls = rotation.atomic_write, []

    def write(path, data, *args, **kwargs):
        calls.append(path)
        if len(calls) - 1 == nth:
            raise Interrupted(str(path))
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(rotation, "atomic_write", write)


@pytest.mark.parametrize("nth", [0, 1])
def test_a_prepare_cut_short_never_leaves_a_root_no_step_can_retire(home, monkeypatch, nth):
    layout = ca_layout(home)
    old = load_ca(layout)
    _interrupt_write(monkeypatch, nth)
    with pytest.raises(Interrupted):
        rotation.prepare(layout, now=utcnow())
    monkeypatch.undo()
    state = rotation.rotation_state(layout)
    if len(roots(home)) > 1:  # a second root is trusted: some step must know about it
        assert state.phase == rotation.PREPARED
    if state.phase == rotation.PREPARED:
        refused = tm(home, "rotate", "activate", "--now")  # a half-prepared CA never signs
        if refused.returncode == 1:
            assert refused.stderr.count("\n") == 1 and "abort" in refused.stderr
        assert tm(home, "rotate", "abort").returncode == 0
    assert roots(home) == [old.root_cert]
    assert tm(home, "rotate", "prepare").returncode == 0  # and the rotation can start over


@pytest.mark.parametrize("nth", range(5))
def test_an_activate_cut_short_at_any_file_is_named_as_such_and_finished_by_running_it_again(
    home, monkeypatch, nth
):
    layout = ca_layout(home)
    rotation.prepare(layout, now=utcnow())
    prepared = load_ca(layout.next)
    _interrupt_write(monkeypatch, nth)  # four CA files, then the phase
    with pytest.raises(Interrupted):
        rotation.activate(layout, now=utcnow(), wait=dt.timedelta(0))
    monkeypatch.undo()
    status = tm(home, "status")
    if status.returncode != 0:  # two CAs' files side by side: never taken for a broken CA
        assert status.stderr.count("\n") == 1 and "Traceback" not in status.stderr
        assert "rotate activate' cut short leaves this: run it again" in status.stderr
    result = tm(home, "rotate", "activate", "--now")
    assert result.returncode == 0, result.stderr
    assert load_ca(layout).root_cert == prepared.root_cert
    assert tm(home, "status").returncode == 0


@pytest.mark.parametrize("step", ["abort", "retire"])
def test_an_abort_or_retire_cut_short_is_finished_by_running_it_again(home, monkeypatch, step):
    layout = ca_layout(home)
    rotation.prepare(layout, now=utcnow())
    if step == "retire":
        rotation.activate(layout, now=utcnow(), wait=dt.timedelta(0))
    current = load_ca(layout)
    monkeypatch.setattr(rotation, "_clear_state", lambda layout: (_ for _ in ()).throw(Interrupted))
    with pytest.raises(Interrupted):
        if step == "abort":
            rotation.abort(layout)
        else:
            rotation.retire(layout, now=utcnow(), wait=dt.timedelta(0))
    monkeypatch.undo()
    result = tm(home, "rotate", step, "--now") if step == "retire" else tm(home, "rotate", step)
    assert result.returncode == 0, result.stderr
    assert roots(home) == [current.root_cert]
    assert rotation.rotation_state(layout).phase == rotation.NONE


# -- ca init --force in the middle of a rotation ----------------------------------------------


@pytest.mark.parametrize("steps", [["prepare"], ["prepare", "activate"]])
def test_init_force_ends_the_rotation_of_the_ca_it_replaces(home, steps):
    layout = ca_layout(home)
    for step in steps:
        assert tm(home, "rotate", step, *(["--now"] if step != "prepare" else [])).returncode == 0
    assert tm(home, "init", "--force").returncode == 0
    fresh = load_ca(layout)
    assert roots(home) == [fresh.root_cert]
    assert rotation.rotation_state(layout).phase == rotation.NONE
    assert not layout.next.directory.exists()
    assert "rotation" not in tm(home, "status").stdout
    assert tm(home, "rotate", "prepare").returncode == 0  # a rotation of the new CA can start


def test_a_rotation_state_file_that_does_not_parse_is_one_line_everywhere(home):
    layout = ca_layout(home)
    layout.rotation.write_text('{"phase": "prepared"')  # cut short by a full disk
    with pytest.raises(CAStorageError):
        rotation.rotation_state(layout)
    for args in (["status"], ["rotate", "prepare"], ["rotate", "abort"]):
        result = tm(home, *args)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert "rotation.json is unreadable" in result.stderr and "Traceback" not in result.stderr


# -- durations no datetime can hold -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["token", "--app-id", "web", "--ttl", "99999999d"],
        ["issue", "--app-id", "web", "--out", "svid", "--ttl", "99999999d"],
        ["rotate", "activate", "--svid-ttl", "99999999d"],
        ["rotate", "retire", "--svid-ttl", "99999999d"],
        ["serve", "--svid-ttl", "99999999d"],
    ],
)
def test_a_duration_too_long_for_a_date_is_a_usage_error_not_an_internal_one(home, args):
    result = tm(home, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "must be at most 36500d" in result.stderr
    assert "internal error" not in result.stderr


# -- what ca status says during a rotation ----------------------------------------------------


def test_status_during_a_rotation_still_says_the_signing_ca_has_expired(tmp_path):
    layout = ca_layout(tmp_path, create=True)
    long_ago = utcnow() - dt.timedelta(days=3)
    save_ca(layout, CertificateAuthority.create("public", now=long_ago, ttl=dt.timedelta(days=1)))
    rotation.prepare(layout, now=utcnow())
    result = tm(tmp_path, "status")
    assert result.returncode == 0, result.stderr
    assert "rotation      prepared at " in result.stdout
    assert "the CA has expired" in result.stdout


def test_status_names_the_next_step_time_from_the_svid_lifetime_given(home):
    layout = ca_layout(home)
    since = utcnow().replace(microsecond=0)
    rotation.prepare(layout, now=since)
    ready = (since + dt.timedelta(minutes=10)).isoformat(timespec="seconds")
    result = tm(home, "status", "--svid-ttl", "10m")
    assert f"'trustmesh ca rotate activate' from {ready} (one SVID lifetime: 10m)" in result.stdout


def test_a_rotation_state_without_a_utc_offset_is_one_line_not_an_internal_error(home):
    assert tm(home, "rotate", "prepare").returncode == 0
    layout = ca_layout(home)
    layout.rotation.write_text('{"phase": "prepared", "since": "2026-01-01T00:00:00"}')
    for args in (["status"], ["rotate", "activate"], ["rotate", "abort"]):
        result = tm(home, *args)
        assert result.returncode == 1 and result.stderr.count("\n") == 1, (args, result.stderr)
        assert "has no UTC offset" in result.stderr and "internal error" not in result.stderr


# -- ca serve on a bundle that cannot carry its CA --------------------------------------------


def test_ca_serve_refuses_to_start_on_a_bundle_without_its_own_root(home):
    layout = ca_layout(home)
    foreign = CertificateAuthority.create("public", now=utcnow())
    layout.bundle.write_bytes(TrustBundle([foreign.root_cert]).to_pem())
    result = subprocess.run(
        [TRUSTMESH, "ca", "serve", "--listen", "127.0.0.1:0", "--home", str(home)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "does not hold the CA's own root" in result.stderr
    assert "listening on" not in result.stdout


def test_a_hand_edited_ca_during_a_rotation_is_not_taken_for_a_cut_short_activate(home):
    layout = ca_layout(home)
    rotation.prepare(layout, now=utcnow())
    other = CertificateAuthority.create("public", now=utcnow())
    layout.root_cert.write_bytes(TrustBundle([other.root_cert]).to_pem())  # neither CA's
    result = tm(home, "status")
    assert result.returncode == 1 and "does not match" in result.stderr
    assert "cut short" not in result.stderr  # 'activate' would not repair this


# -- steps timed by the SVID lifetime ca serve really issues ----------------------------------


def test_steps_wait_for_the_svid_lifetime_ca_serve_issues_not_only_the_one_given(home):
    with running_ca(home, home / "ca.log", "--svid-ttl", "48h"):
        pass  # a serve of 48 h SVIDs: sidecars renew every 24 h, so a day is not enough
    layout = ca_layout(home)
    since = utcnow()
    rotation.prepare(layout, now=since)
    day = dt.timedelta(hours=24)
    with pytest.raises(RotationRefused, match="one SVID lifetime: 2d"):
        rotation.activate(layout, now=since + day + dt.timedelta(hours=1), wait=day)
    status = tm(home, "status").stdout  # and status names the same moment
    ready = (since + 2 * day).isoformat(timespec="seconds")
    assert f"'trustmesh ca rotate activate' from {ready} (one SVID lifetime: 2d)" in status
    rotation.activate(layout, now=since + 2 * day, wait=day)  # the twin: after 48 h
    with pytest.raises(RotationRefused, match="too early to retire"):
        rotation.retire(layout, now=since + 3 * day, wait=day)
    rotation.retire(layout, now=since + 4 * day, wait=day)


def test_a_shorter_lived_serve_later_does_not_shorten_the_wait(home):
    layout = ca_layout(home)
    rotation.record_svid_lifetime(layout, dt.timedelta(hours=48))
    rotation.record_svid_lifetime(layout, dt.timedelta(hours=1))  # its SVIDs may still be out
    assert rotation.step_wait(layout, dt.timedelta(hours=24)) == dt.timedelta(hours=48)
    assert rotation.step_wait(layout, dt.timedelta(hours=72)) == dt.timedelta(hours=72)
