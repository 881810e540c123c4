"""A retire that ``ca serve`` could not load at first must still take effect once it can.

The attack: someone kept an SVID the old CA signed (valid for an hour) and renews it at the CA
after ``retire``, for a fresh SVID under the new CA that outlives the old root. The CA refuses
it only if it reloaded the retired bundle. Here the CA's files cannot be loaded when ``retire``
lands (the root key left readable by others, as a hand edit or another user's umask leaves it,
which ``ca serve`` refuses to load), and the operator then repairs the mode with ``chmod``. A
mode change leaves a file's mtime alone, so a server that looks again only when a file's mtime
changes goes on trusting the retired root for renewals forever. The CA must pick the repaired
files up at its next look, and the stolen SVID's renewal must then fail at the handshake; the
CA's own "svid issued" log proves nothing was issued for it. Its twin, an SVID of the new CA,
renews.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import trio

from ca.client import renew_svid
from ca.home import ca_layout, locked
from ca.store import load_bundle, load_ca
from identity import TrustBundle, atomic_write, load_svid_dir
from tests._support.ca_proc import TRUSTMESH, running_ca

pytestmark = pytest.mark.e2e

WAIT = 20.0


def _tm(home, *args: str) -> None:
    result = subprocess.run(
        [TRUSTMESH, "ca", *args, "--home", str(home)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def _events(ca, event: str) -> list[dict]:
    return [e for e in ca.log_events() if e.get("event") == event]


def _await_event(ca, event: str, count: int, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while len(_events(ca, event)) < count:
        assert time.monotonic() < deadline, f"ca serve never {what}:\n{ca.log_path.read_text()}"
        time.sleep(0.1)


def _renews(ca, svid_dir, bundle) -> bool:
    svid, _ = load_svid_dir(svid_dir)
    try:
        trio.run(renew_svid, ca.url, svid, bundle)
    except Exception:  # the CA refused the handshake (CAUnreachable) or the request
        return False
    return True


def _issued_to(ca, app_id: str) -> int:
    return sum(e["spiffe_id"].endswith(f"/{app_id}") for e in _events(ca, "svid issued"))


def test_a_stolen_old_svid_cannot_renew_after_a_retire_the_ca_loaded_late(tmp_path):
    home = tmp_path / "home"
    _tm(home, "init")
    layout = ca_layout(home)
    with running_ca(home, tmp_path / "ca.log") as ca:
        kept = tmp_path / "kept"  # the attacker's copy, signed by the CA about to be replaced
        _tm(home, "issue", "--app-id", "client", "--ttl", "1h", "--out", str(kept))
        _tm(home, "rotate", "prepare")
        _await_event(ca, "ca reloaded", 1, "reloaded after prepare")
        _tm(home, "rotate", "activate", "--now")
        _await_event(ca, "ca reloaded", 2, "reloaded after activate")
        fresh = tmp_path / "fresh"  # the twin: an SVID of the new CA
        _tm(home, "issue", "--app-id", "server", "--ttl", "1h", "--out", str(fresh))

        with locked(layout.lock):  # what 'retire' writes, landing with a key ca serve refuses
            atomic_write(layout.bundle, TrustBundle([load_ca(layout).root_cert]).to_pem())
            layout.rotation.unlink()
            layout.root_key.chmod(0o644)  # as another user's umask or a hand edit leaves it
        _await_event(ca, "ca files changed but cannot be loaded; keeping the CA", 1, "noticed")
        layout.root_key.chmod(0o600)  # the operator repairs it: the mtime does not change
        _await_event(ca, "ca reloaded", 3, "picked up the repaired files")

        new_only = load_bundle(layout)
        assert len(new_only.authorities) == 1
        before = _issued_to(ca, "client")
        assert not _renews(ca, kept, new_only)
        assert _issued_to(ca, "client") == before  # nothing was issued for the stolen SVID
        assert _renews(ca, fresh, new_only)  # the twin renews
        assert _issued_to(ca, "server") == 1
