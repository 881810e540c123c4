"""``ca rotate`` under any order of steps, each possibly cut short at any of its writes.

Hypothesis drives a real state directory through random sequences of prepare, activate,
retire, abort and ``init --force``, each one possibly interrupted (as by kill -9) at one of its
file operations. After every step, whatever happened, the files must hold:

* no rotation under way: the bundle is exactly the CA's own root (no root nobody can retire);
* prepared: the old CA or, if an activate was cut short, files the loader names as such;
* activated: the CA loads and its root is trusted;
* and from any state the documented next steps finish the rotation.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca import CAError, CertificateAuthority, rotation
from ca.home import CALayout, ca_layout
from ca.store import load_bundle, load_ca, save_ca
from tests._support.pki import utcnow

NOW_WAIT = dt.timedelta(0)
STEPS = ("prepare", "activate", "retire", "abort", "init_force")


class Interrupted(BaseException):
    """A crash at a chosen file operation: nothing after it runs."""


def _run(layout: CALayout, step: str, cut_at: int | None, monkeypatch) -> None:
    """Run ``step``; with ``cut_at``, crash at that file operation of the rotation module."""
    calls = []
    if cut_at is not None:
        for name in ("atomic_write", "_clear_state", "_remove_next"):
            real = getattr(rotation, name)

            def operation(*args, _real=real, **kwargs):
                calls.append(None)
                if len(calls) - 1 == cut_at:
                    raise Interrupted
                return _real(*args, **kwargs)

            monkeypatch.setattr(rotation, name, operation)
    try:
        now = utcnow()
        if step == "prepare":
            rotation.prepare(layout, now=now)
        elif step == "activate":
            rotation.activate(layout, now=now, wait=NOW_WAIT, force=True)
        elif step == "retire":
            rotation.retire(layout, now=now, wait=NOW_WAIT, force=True)
        elif step == "abort":
            rotation.abort(layout)
        else:
            save_ca(layout, CertificateAuthority.create("public", now=now), force=True)
            rotation.forget(layout)
    except (Interrupted, CAError):
        pass  # a crash, or a refusal (out of order, files an activate left half-written)
    finally:
        monkeypatch.undo()


def _check_invariants(layout: CALayout) -> None:
    phase = rotation.rotation_state(layout).phase
    roots = list(load_bundle(layout).authorities)
    assert len(roots) <= 2
    if phase == rotation.NONE:
        assert roots == [load_ca(layout).root_cert], "a root is trusted that no step can retire"
    elif phase == rotation.ACTIVATED:
        assert load_ca(layout).root_cert in roots
    else:
        assert load_ca(layout.next).root_cert is not None
        try:
            assert load_ca(layout).root_cert in roots
        except CAError as exc:
            assert "cut short leaves this: run it again" in str(exc)


def _finish(layout: CALayout) -> None:
    """The documented way out of every state: a rotation ends with one trusted root."""
    phase = rotation.rotation_state(layout).phase
    if phase == rotation.PREPARED:
        try:
            load_ca(layout)
            prepared_is_trusted = load_ca(layout.next).root_cert in load_bundle(layout).authorities
        except CAError:  # an activate cut short: finish it
            prepared_is_trusted = None
        if prepared_is_trusted is False:
            rotation.abort(layout)
        else:
            rotation.activate(layout, now=utcnow(), wait=NOW_WAIT, force=True)
            phase = rotation.ACTIVATED
    if phase == rotation.ACTIVATED:
        rotation.retire(layout, now=utcnow(), wait=NOW_WAIT, force=True)
    assert rotation.rotation_state(layout).phase == rotation.NONE
    assert list(load_bundle(layout).authorities) == [load_ca(layout).root_cert]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(STEPS), st.none() | st.integers(min_value=0, max_value=5)),
        min_size=1,
        max_size=6,
    )
)
def test_any_sequence_of_steps_cut_anywhere_leaves_a_state_a_step_can_finish(
    steps, monkeypatch: pytest.MonkeyPatch
):
    with tempfile.TemporaryDirectory() as directory:
        layout = ca_layout(Path(directory), create=True)
        save_ca(layout, CertificateAuthority.create("public", now=utcnow()))
        for step, cut_at in steps:
            _run(layout, step, cut_at, monkeypatch)
            _check_invariants(layout)
        _finish(layout)
