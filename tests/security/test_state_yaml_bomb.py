"""A watched file replaced by a YAML alias bomb must not stall the sidecar.

The review's attack: a 640-byte anchor/alias tree (8 levels, fan-out 9) written into a file a
sidecar watches (its ``--config FILE``, or its configuration in the mesh store) stopped the data
plane and the admin port for seconds, because the file was parsed on the event loop and the
duplicate-key check walked every alias. Here a caller keeps calling through real sidecars on a
fixed schedule while the file is swapped for the bomb: its median latency stays within 2× of the
calm median (the ratio the issue asks for), the bomb is refused and reported with file and line,
and the last good policy still decides — the allowed caller gets through, the stranger is denied
and never reaches the app. The twin: a valid file written after the bomb is picked up, so
refusing did not wedge the watcher.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from identity import AppIdentity, save_svid_dir
from sidecar.state.store import AppBinding, MeshStore
from tests._support.pki import utcnow
from tests._support.procs import ProcessSet

pytestmark = pytest.mark.e2e

# The test app with Nagle off: its headers and body leave as separate writes, and with Nagle on
# every keep-alive response waits ~40 ms for a delayed ACK, which would hide the sidecar's share.
QUICK_APP = [
    sys.executable,
    "-c",
    "import tests._support.testapp as t; t.Handler.disable_nagle_algorithm = True; t.main()",
]
INTERVAL = 0.01  # the caller's schedule: one call every 10 ms
WINDOW = 1.5  # seconds measured calm, and again from the moment the bomb lands

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: target-acl
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
      - appId: caller
        defaultAction: {caller_action}
        namespace: default
        trustDomain: public
"""


def alias_bomb(levels: int = 8, fan_out: int = 9) -> str:
    """The review's file: a valid-looking Configuration hiding a 9**8-node alias tree."""
    lines = CONFIG.format(caller_action="allow").splitlines()
    lines += ["  features:", "    l0: &a0 [" + ",".join(["x"] * fan_out) + "]"]
    for level in range(1, levels):
        lines.append(f"    l{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


def replace_file(path: Path, text: str) -> None:
    """Write + rename, as an editor or a config-map update would: never a half-written file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class ScheduledCaller:
    """Calls on a fixed schedule and records each call's latency from its *scheduled* start.

    A sequential caller stuck behind one slow call would otherwise record a single slow sample
    and miss the stall; measured from the schedule, every call the stall delayed counts (the
    usual correction for coordinated omission).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float]] = []  # (scheduled start, latency)
        self.statuses: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            scheduled = time.monotonic()
            while not self.stop.is_set():
                now = time.monotonic()
                if now < scheduled:
                    time.sleep(scheduled - now)
                status = client.get(self.url).status_code
                done = time.monotonic()
                self.statuses.add(status)
                # This call and every call its wait kept from starting on schedule: each of
                # those would have been answered no sooner than this one was.
                while scheduled <= done:
                    self.samples.append((scheduled, done - scheduled))
                    scheduled += INTERVAL

    def median_in(self, *windows: tuple[float, float]) -> tuple[float, int]:
        picked = [
            latency
            for when, latency in self.samples
            if any(start <= when < end for start, end in windows)
        ]
        return statistics.median(picked), len(picked)


def admin_status(proc) -> dict:
    return httpx.get(f"http://{proc.ready['admin']}/v1/status", timeout=10).json()


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def procs(tmp_path):
    procs = ProcessSet(tmp_path)
    yield procs
    assert not procs.stop_all(), "processes outlived SIGTERM"


def sidecar(procs, ca, home: Path, app_id: str, app_port: int | None = None, extra=()):
    directory = home.parent / "svids" / app_id
    svid = ca.issue(AppIdentity(ca.trust_domain, "default", app_id), now=utcnow())
    save_svid_dir(directory, svid, ca.bundle)
    return procs.sidecar(app_id, home, svid_dir=directory, app_port=app_port, extra=list(extra))


def watched_file(where: str, tmp_path: Path, home: Path) -> tuple[Path, list[str]]:
    """The good configuration, in a ``--config`` file or in the mesh store bound to the app."""
    document = yaml.safe_load(CONFIG.format(caller_action="allow"))
    if where == "config-file":
        config = tmp_path / "target-acl.yaml"
        config.write_text(CONFIG.format(caller_action="allow"))
        return config, ["--config", str(config)]
    store = MeshStore(home)
    with store.change() as change:
        change.put("Configuration", "target-acl", document)
        change.put_binding(AppBinding("target", configuration="target-acl"))
    return store.path("Configuration", "target-acl"), []


@pytest.mark.parametrize("where", ["config-file", "store-file"])
def test_alias_bomb_in_a_watched_file_is_refused_without_stalling_callers(
    tmp_path, procs, mesh_ca, where
):
    home = tmp_path / "home"
    config, extra = watched_file(where, tmp_path, home)
    app = procs.start("app", QUICK_APP)
    target = sidecar(procs, mesh_ca, home, "target", app.ready["port"], extra=extra)
    caller = sidecar(procs, mesh_ca, home, "caller")
    stranger = sidecar(procs, mesh_ca, home, "stranger")
    wait_for(lambda: admin_status(target)["policy"]["generation"] is not None, what="policy")

    def call(via) -> httpx.Response:
        return httpx.get(f"{via.url()}/v1.0/invoke/target/method/echo", timeout=30)

    def app_count() -> int:
        return httpx.get(f"http://127.0.0.1:{app.ready['port']}/count", timeout=10).json()["count"]

    assert call(caller).status_code == 200
    assert call(stranger).status_code == 403
    loaded_version = admin_status(target)["policy"]["version"]

    scheduled = ScheduledCaller(f"{caller.url()}/v1.0/invoke/target/method/echo")
    scheduled.thread.start()
    calm_start = time.monotonic()
    time.sleep(WINDOW)
    bomb_start = time.monotonic()
    replace_file(config, alias_bomb())
    time.sleep(WINDOW)
    calm_again = time.monotonic()
    time.sleep(WINDOW)  # calm is measured on both sides, so one burst of noise weighs less
    scheduled.stop.set()
    scheduled.thread.join(60)
    assert not scheduled.thread.is_alive(), "a call was still stalled a minute after the bomb"

    calm, calm_calls = scheduled.median_in(
        (calm_start, bomb_start), (calm_again, calm_again + WINDOW)
    )
    stormy, stormy_calls = scheduled.median_in((bomb_start, calm_again))
    assert calm_calls > 10 and stormy_calls > 10
    assert scheduled.statuses == {200}
    assert stormy <= 2 * calm, (
        f"median latency {stormy * 1000:.1f} ms with the bomb vs {calm * 1000:.1f} ms calm"
    )

    # Refused and reported, naming the file and the line of the first anchor.
    status = wait_for(
        lambda: (s := admin_status(target))["policy"]["error"] and s, what="refusal on status"
    )
    assert f"{config}:15: anchor &a0 refused" in status["policy"]["error"]
    assert status["policy"]["version"] == loaded_version
    wait_for(lambda: "policy refused" in target.stderr(), what="refusal in the log")

    # The last good policy still decides: the caller passes, the stranger never reaches the app.
    before = app_count()
    assert call(caller).status_code == 200
    denied = call(stranger)
    assert denied.status_code == 403
    assert denied.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    assert app_count() == before + 1

    # The twin: a valid change after the bomb takes effect, so the watcher did not wedge.
    replace_file(config, CONFIG.format(caller_action="deny"))
    wait_for(lambda: admin_status(target)["policy"]["error"] is None, what="recovery")
    assert call(caller).status_code == 403
