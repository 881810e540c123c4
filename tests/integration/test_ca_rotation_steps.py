"""``trustmesh ca rotate``: each step's files, order and waits, on a real state directory.

What the steps must guarantee (``ca.rotation``): while a rotation is under way both roots are
trusted; the new CA signs only after ``activate``; the old root leaves only at ``retire``; a
step out of order, or before the previous one can have reached every sidecar, is refused with
one line; join tokens survive; ``abort`` undoes a ``prepare``.
"""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from ca import rotation
from ca.cli import ca_group
from ca.home import ca_layout
from ca.store import load_ca
from ca.tokens import TokenStore
from identity import AppIdentity
from tests._support.ca_proc import ca_command as tm
from tests._support.ca_proc import trusted_roots as roots
from tests._support.pki import utcnow


@pytest.fixture
def home(tmp_path):
    assert CliRunner().invoke(ca_group, ["init", "--home", str(tmp_path)]).exit_code == 0
    return tmp_path


def test_prepare_trusts_a_second_root_while_the_old_ca_still_signs(home):
    layout = ca_layout(home)
    old = load_ca(layout)
    result = tm(home, "rotate", "prepare")
    assert result.returncode == 0, result.stderr
    new = load_ca(layout.next)
    assert roots(home) == [old.root_cert, new.root_cert]
    assert load_ca(layout).issuer_cert == old.issuer_cert  # not signing yet
    assert new.trust_domain == old.trust_domain and new.root_cert != old.root_cert
    assert rotation.rotation_state(layout).phase == rotation.PREPARED


def test_activate_before_the_new_root_can_have_spread_is_one_line_and_changes_nothing(home):
    tm(home, "rotate", "prepare")
    before = ca_layout(home).issuer_cert.read_bytes()
    result = tm(home, "rotate", "activate")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "too early to activate" in result.stderr
    assert "--now" in result.stderr and "Traceback" not in result.stderr
    assert ca_layout(home).issuer_cert.read_bytes() == before


def test_activate_then_retire_leaves_only_the_new_root(home):
    layout = ca_layout(home)
    old = load_ca(layout)
    web = AppIdentity("public", "default", "web")
    token = TokenStore(layout).issue(web, now=utcnow(), ttl=dt.timedelta(hours=1))
    assert tm(home, "rotate", "prepare").returncode == 0
    prepared = load_ca(layout.next)
    assert tm(home, "rotate", "activate", "--now").returncode == 0
    current = load_ca(layout)
    assert current.root_cert == prepared.root_cert  # the new CA signs
    assert roots(home) == [old.root_cert, prepared.root_cert]  # the old root still trusted
    assert not layout.next.directory.exists()
    retire = tm(home, "rotate", "retire")
    assert retire.returncode == 1 and "too early to retire" in retire.stderr
    assert tm(home, "rotate", "retire", "--now").returncode == 0
    assert roots(home) == [prepared.root_cert]
    assert rotation.rotation_state(layout).phase == rotation.NONE
    # A join token minted before the rotation still enrols (it names an identity, not a CA).
    assert TokenStore(layout).check(token, now=utcnow()) == web


def test_steps_waited_out_pass_without_now(home):
    layout = ca_layout(home)
    start = utcnow()
    rotation.prepare(layout, now=start)
    wait = dt.timedelta(hours=24)
    later = start + wait
    rotation.activate(layout, now=later, wait=wait)
    rotation.retire(layout, now=later + wait, wait=wait)
    assert roots(home) == [load_ca(layout).root_cert]


@pytest.mark.parametrize(
    ("steps", "then", "message"),
    [
        ([], "activate", "no rotation is under way"),
        ([], "retire", "no rotation is under way"),
        ([], "abort", "no rotation is under way"),
        (["prepare"], "prepare", "the next step is 'trustmesh ca rotate activate'"),
        (["prepare"], "retire", "the next step is 'trustmesh ca rotate activate'"),
        (["prepare", "activate"], "prepare", "the next step is 'trustmesh ca rotate retire'"),
        (["prepare", "activate"], "abort", "the next step is 'trustmesh ca rotate retire'"),
    ],
)
def test_a_step_out_of_order_is_refused_with_one_line(home, steps, then, message):
    for step in steps:
        extra = ["--now"] if step != "prepare" else []
        assert tm(home, "rotate", step, *extra).returncode == 0
    bundle = ca_layout(home).bundle.read_bytes()
    extra = ["--now"] if then in ("activate", "retire") else []
    result = tm(home, "rotate", then, *extra)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert ca_layout(home).bundle.read_bytes() == bundle


def test_abort_undoes_prepare(home):
    layout = ca_layout(home)
    old = load_ca(layout)
    assert tm(home, "rotate", "prepare").returncode == 0
    assert tm(home, "rotate", "abort").returncode == 0
    assert roots(home) == [old.root_cert]
    assert not layout.next.directory.exists()
    assert rotation.rotation_state(layout).phase == rotation.NONE
    assert tm(home, "rotate", "prepare").returncode == 0  # and it can start again


def test_status_names_the_phase_and_the_next_step(home):
    tm(home, "rotate", "prepare")
    lines = tm(home, "status").stdout.splitlines()
    assert lines[3].startswith("also trusted  root valid until ")
    assert lines[4].startswith("rotation      prepared at ")
    assert "'trustmesh ca rotate activate' from " in lines[4]


def test_an_interrupted_activate_is_finished_by_running_it_again(home):
    layout = ca_layout(home)
    rotation.prepare(layout, now=utcnow())
    prepared = load_ca(layout.next)
    # As if activate stopped after its first file: the CA files disagree with each other.
    layout.root_cert.write_bytes(layout.next.root_cert.read_bytes())
    result = tm(home, "status")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert tm(home, "rotate", "activate", "--now").returncode == 0
    assert load_ca(layout).root_cert == prepared.root_cert
