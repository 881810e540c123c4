"""Sidecars that get their identity from the bundled CA with a join token, and keep it fresh."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests._support.ca_proc import join_sidecar, running_ca

pytestmark = pytest.mark.e2e

TRUSTMESH = [sys.executable, "-m", "sidecar"]


def _tm(home, *args) -> str:
    result = subprocess.run(
        [*TRUSTMESH, *args, "--home", str(home)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _status(proc) -> dict:
    return httpx.get(f"http://{proc.ready['admin']}/v1/status").json()


def test_join_token_is_single_use(mesh, tmp_path):
    _tm(mesh.home, "ca", "init")
    with running_ca(mesh.home, tmp_path / "ca.log") as ca:
        token = _tm(mesh.home, "ca", "token", "--app-id", "one")
        first = mesh.procs.sidecar(
            "one", mesh.home, extra=["--ca-url", ca.url], env={"TRUSTMESH_JOIN_TOKEN": token}
        )
        assert _status(first)["spiffe_id"] == "spiffe://public/ns/default/one"
        replay = subprocess.run(
            [*TRUSTMESH, "sidecar", "--app-id", "one", "--home", str(mesh.home),
             "--http-port", "0", "--ca-url", ca.url],
            env={**__import__("os").environ, "TRUSTMESH_JOIN_TOKEN": token},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert replay.returncode == 1
        assert "refused the join token" in replay.stderr
        assert "Traceback" not in replay.stderr


def test_a_short_lived_svid_renews_under_load_without_a_failed_request(mesh, tmp_path):
    _tm(mesh.home, "ca", "init")
    # 16 s: renewed at half-life, 8 s in, which is as long as the test has to wait for it.
    with running_ca(mesh.home, tmp_path / "ca.log", "--svid-ttl", "16s") as ca:
        app = mesh.procs.app()
        server = join_sidecar(mesh, ca.url, "server", app.ready["port"])
        client = join_sidecar(mesh, ca.url, "client")
        first_serials = {p.name: _status(p)["svid"]["serial"] for p in (server, client)}
        failures: list[str] = []
        done = 0
        stop = threading.Event()

        def load():
            nonlocal done
            # New connections too, so handshakes happen with whatever SVID is current.
            while not stop.is_set():
                with httpx.Client(timeout=10) as http:
                    for _ in range(20):
                        url = f"{client.url()}/v1.0/invoke/server/method/echo"
                        try:
                            response = http.post(url, content=b"x")
                            if response.status_code != 200:
                                failures.append(f"{response.status_code} {response.text}")
                            done += 1
                        except httpx.HTTPError as exc:
                            failures.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                statuses = [_status(p) for p in (server, client)]
                if all(s["svid"]["renewals"] >= 1 for s in statuses):
                    break
                time.sleep(0.5)
            # keep the load on a little after the switch
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        statuses = {p.name: _status(p) for p in (server, client)}
        for name, status in statuses.items():
            assert status["svid"]["renewals"] >= 1, (name, status)
            assert status["svid"]["serial"] != first_serials[name]
        assert failures == []
        assert done > 50
        issued = [e for e in ca.log_events() if "serial" in e]
        assert len(issued) >= 4  # two joins, two renewals
