"""``ca serve`` following the CA's files (``CAServer._follow_state``) while it serves.

A reload takes the CA's lock, so that it never reads half of a rotation step. Every ``ca``
command takes that lock too; one that holds it for long (suspended with ^Z, stuck on a slow
disk) must delay the reload only, never freeze the CA's connections with it.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time

import pytest
import trio
from click.testing import CliRunner
from structlog.testing import capture_logs

from ca import rotation
from ca.cli import ca_group
from ca.client import fetch_bundle
from ca.home import CALayout, ca_layout, locked
from ca.server import CAServer, listener_url, load_served_files
from ca.service import SigningService
from ca.store import load_bundle
from ca.tokens import TokenStore
from identity import atomic_write
from tests._support.ca_proc import open_tls, running_ca
from tests._support.pki import utcnow

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


async def test_a_ca_that_expires_while_serving_says_so_and_keeps_serving(tmp_path, mesh_ca):
    """The server's own certificate is re-issued at half-life; once the CA has expired that
    fails. It must be logged, and the listener must go on (the bundle is still served)."""
    service = SigningService(mesh_ca, TokenStore(CALayout(tmp_path)))
    server = CAServer(service)
    expired_at = mesh_ca.not_after + dt.timedelta(hours=1)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            service.clock = lambda: expired_at  # the CA's end has come (its server cert was
            listeners = await nursery.start(server.serve, "127.0.0.1", 0)  # issued before)
            with trio.fail_after(10):
                while not any(e["event"] == "ca server certificate not renewed" for e in logs):
                    await trio.sleep(0.05)
            stream = await open_tls(listener_url(listeners[0]), _unverified())
            await trio.aclose_forcefully(stream)  # still accepting connections
            nursery.cancel_scope.cancel()
    [failure] = [e for e in logs if e["event"] == "ca server certificate not renewed"]
    assert "expired" in failure["error"] and failure["log_level"] == "error"


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def test_a_rotation_step_landing_between_the_load_and_the_watch_is_picked_up(home):
    """'ca serve' loads the CA, then sets up logging and listeners, then starts watching: a
    step in between used to be taken as the files' starting point, and never applied."""
    layout = ca_layout(home)
    authority, trusted, signature = load_served_files(layout)
    service = SigningService(authority, TokenStore(layout), trusted=trusted)
    server = CAServer(service, state=layout, state_signature=signature)
    rotation.prepare(layout, now=utcnow())  # lands before the watch starts
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        with trio.fail_after(10):
            while len(service.trusted.authorities) != 2:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert service.trusted == load_bundle(layout)
