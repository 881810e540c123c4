"""Replacing the bundled CA under traffic: no outage, and the old root's SVIDs end at ``retire``.

A real ``trustmesh ca serve`` (SVIDs of 6 s, so sidecars renew every ~3 s), a server sidecar in
front of the test app and a client sidecar, both enrolled with join tokens. The rotation runs
step by step, each step awaited where the sidecars show it (``/v1/status``): calls through the
pair keep working at every step. An SVID the old CA signed before ``activate`` (a copy kept by
someone, valid for an hour) is the attack: accepted while the old root is still trusted, as the
design says, and refused at the handshake once it is retired — the app's own request counter
proves it never arrived. Its twin, the client sidecar renewed under the new CA, is served.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest

from identity import TrustBundle, client_context, load_svid_dir
from tests._support.ca_proc import join_sidecar, running_ca
from tests._support.gated_stream import post_echo

pytestmark = pytest.mark.e2e

TRUSTMESH = [sys.executable, "-m", "sidecar"]
SVID_TTL = "6s"
WAIT = 30.0  # seconds any one step may take to reach both sidecars (each renews every ~3 s)


def _tm(home, *args: str) -> str:
    result = subprocess.run(
        [*TRUSTMESH, *args, "--home", str(home)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _status(proc) -> dict:
    return httpx.get(f"http://{proc.ready['admin']}/v1/status").json()


def _await(sidecars, done, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not all(done(_status(p)) for p in sidecars):
        assert time.monotonic() < deadline, f"the sidecars never {what}"
        time.sleep(0.2)


def _call(client) -> int:
    url = f"{client.url()}/v1.0/invoke/server/method/echo"
    return httpx.post(url, content=b"x", timeout=10).status_code


def _count(app) -> int:
    return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count").json()["count"]


def _with_kept_svid(server, context: ssl.SSLContext) -> int:
    """One POST on a new mTLS connection to the server sidecar; 0 if refused."""
    try:
        with context.wrap_socket(socket.create_connection(server.address("inbound"), 10)) as tls:
            return post_echo(tls)
    except (ConnectionError, ssl.SSLError):
        return 0


def test_a_rotation_under_traffic_ends_the_old_roots_svids_and_nothing_else(mesh, tmp_path):
    _tm(mesh.home, "ca", "init")
    with running_ca(mesh.home, tmp_path / "ca.log", "--svid-ttl", SVID_TTL) as ca:
        app = mesh.procs.app()
        server = join_sidecar(mesh, ca.url, "server", app.ready["port"])
        client = join_sidecar(mesh, ca.url, "client")
        pair = (server, client)
        assert _call(client) == 200

        # The attack's material: an SVID for "client" from the CA about to be replaced.
        kept = tmp_path / "kept"
        _tm(mesh.home, "ca", "issue", "--app-id", "client", "--ttl", "1h", "--out", str(kept))
        kept_svid, _ = load_svid_dir(kept)

        _tm(mesh.home, "ca", "rotate", "prepare")
        _await(pair, lambda s: s["trust_bundle"]["authorities"] == 2, "learnt the new root")
        assert _call(client) == 200

        renewed = {s["app_id"]: s["svid"]["renewals"] for s in map(_status, pair)}
        _tm(mesh.home, "ca", "rotate", "activate", "--now", "--svid-ttl", SVID_TTL)
        # Two renewals: the first may have been signed before the CA server reloaded.
        _await(
            pair,
            lambda s: s["svid"]["renewals"] >= renewed[s["app_id"]] + 2,
            "renewed under the new CA",
        )
        assert _call(client) == 200
        both_roots = TrustBundle.from_pem(_tm(mesh.home, "ca", "bundle").encode())
        context = client_context(kept_svid, both_roots)
        # Until retire, the old root is trusted on purpose: its SVIDs are still valid.
        before = _count(app)
        assert _with_kept_svid(server, context) == 200
        assert _count(app) == before + 1

        _tm(mesh.home, "ca", "rotate", "retire", "--now", "--svid-ttl", SVID_TTL)
        _await(pair, lambda s: s["trust_bundle"]["authorities"] == 1, "dropped the old root")
        before = _count(app)
        assert _with_kept_svid(server, context) == 0  # refused at the handshake
        assert _count(app) == before  # it never reached the app
        assert _call(client) == 200  # the twin: renewed under the new CA, served
        assert _count(app) == before + 1
        reloads = [e for e in ca.log_events() if e.get("event") == "ca reloaded"]
        assert len(reloads) == 3
