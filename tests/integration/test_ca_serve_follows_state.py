"""``ca serve`` following the CA's files (``CAServer._follow_state``) while it serves.

A reload takes the CA's lock, so that it never reads half of a rotation step. Every ``ca``
command takes that lock too; one that holds it for long (suspended with ^Z, stuck on a slow
disk) must delay the reload only, never freeze the CA's connections with it.
"""

from __future__ import annotations

import time

import pytest
import trio
from click.testing import CliRunner

from ca.cli import ca_group
from ca.client import fetch_bundle
from ca.home import ca_layout, locked
from ca.store import load_bundle
from identity import atomic_write
from tests._support.ca_proc import running_ca

HELD = 2.5  # seconds the lock is held: more than two of the CA's polls (1 s each)


@pytest.fixture
def home(tmp_path):
    assert CliRunner().invoke(ca_group, ["init", "--home", str(tmp_path)]).exit_code == 0
    return tmp_path


async def _fetch(url, bundle):
    return await fetch_bundle(url, bundle, timeout=5.0)


def _reloads(ca) -> int:
    return sum(e.get("event") == "ca reloaded" for e in ca.log_events())


def test_the_ca_answers_while_a_command_holds_its_lock_and_reloads_once_it_is_free(home):
    layout = ca_layout(home)
    bundle = load_bundle(layout)
    with running_ca(home, home / "ca.log") as ca:
        with locked(layout.lock):  # as a 'ca' command would, for longer than usual
            atomic_write(layout.bundle, bundle.to_pem())  # a change the CA will want to load
            until = time.monotonic() + HELD
            while time.monotonic() < until:  # each answer comes, however long the lock is held
                assert trio.run(_fetch, ca.url, bundle) == bundle
            assert _reloads(ca) == 0  # it waits for the lock: never half of a step
        deadline = time.monotonic() + 20
        while _reloads(ca) == 0:
            assert time.monotonic() < deadline, ca.log_path.read_text()
            time.sleep(0.1)
