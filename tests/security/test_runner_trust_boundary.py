"""#15.2: an app started by ``trustmesh run`` is outside the mesh's trust boundary.

The attack, as the review ran it: an app finds the mesh home in a sibling sidecar's
``/proc/<pid>/cmdline``, reads ``ca/root.key`` (to issue itself an SVID for a privileged App
ID) and writes the registry. Run as root, the runner starts apps as an unprivileged user and
the home is 0700: every attempt is refused with EACCES, reported by the app itself. The twin:
the same app keeps serving its normal requests through the mesh, and calls its own sidecar
with the ``DAPR_API_TOKEN`` the runner gave it (#10.6), a token no other process can use
without reading it, and that no command line or state file shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecar.runner.runstate import read_state, state_path
from tests._support.runner_dirs import app_reachable_dir

pytestmark = pytest.mark.e2e

SYSTEM_PYTHON = Path("/usr/bin/python3")
READY = "You're up and running"

# Stdlib only: it runs with the system interpreter, as the unprivileged user.
ATTACKER = textwrap.dedent(
    """
    import errno, json, os, sys, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    def find_home():
        # As the review did: a sidecar's command line names the mesh home (this app's own
        # sidecar, so that other meshes on the machine do not get in the way).
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\\0")
            except OSError:
                continue
            mine = b"--app-id" in argv and argv[argv.index(b"--app-id") + 1] == APP_ID
            if b"sidecar" in argv and b"--home" in argv and mine:
                return argv[argv.index(b"--home") + 1].decode(), pid
        return None, None

    def attempt(action):
        try:
            action()
            return "ok"
        except OSError as exc:
            return errno.errorcode.get(exc.errno, str(exc.errno))

    APP_ID = os.environ["APP_ID"].encode()
    HOME, SIDECAR_PID = find_home()

    def siblings():
        # The other app of this run: same program, same directory, another pid.
        mine = open("/proc/self/cmdline", "rb").read()
        here = os.getcwd()
        out = []
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    same = open(f"/proc/{pid}/cmdline", "rb").read() == mine
                    if same and os.readlink(f"/proc/{pid}/cwd") == here:
                        out.append(pid)
                except OSError:
                    # cwd of another user's process is not readable: judge by cmdline alone
                    try:
                        if open(f"/proc/{pid}/cmdline", "rb").read() == mine:
                            out.append(pid)
                    except OSError:
                        pass
        return out

    def write_registry():
        with open(os.path.join(HOME, "registry", "default", "admin-agent.json"), "w") as f:
            f.write('{"app_id": "admin-agent"}')

    def outcome():  # tried on every request: the sibling app starts after this one
        return {
            "uid": os.getuid(),
            "home": HOME,
            "read_ca_key": attempt(lambda: open(os.path.join(HOME, "ca", "root.key")).read()),
            "read_issuer_key": attempt(lambda: open(os.path.join(HOME, "ca", "issuer.key")).read()),
            "list_home": attempt(lambda: os.listdir(HOME)),
            "write_registry": attempt(write_registry),
            # Its sidecar's environment holds the join token and the app token.
            "read_sidecar_environ": attempt(lambda: open(f"/proc/{SIDECAR_PID}/environ").read()),
            # Another app's environment holds that app's DAPR_API_TOKEN: its identity in the mesh.
            "read_sibling_environ": [
                attempt(lambda p=p: open(f"/proc/{p}/environ").read()) for p in siblings()
            ],
            "has_dapr_api_token": bool(os.environ.get("DAPR_API_TOKEN")),
        }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            expected = os.environ.get("APP_API_TOKEN")
            if expected and self.headers.get_all("dapr-api-token") != [expected]:
                self.send_response(401)  # did not come through our sidecar
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return
            if self.path.startswith("/call/"):
                port = os.environ["DAPR_HTTP_PORT"]
                target = self.path.removeprefix("/call/")
                url = f"http://127.0.0.1:{port}/v1.0/invoke/{target}/method/attempts"
                token = os.environ.get("DAPR_API_TOKEN")
                request = urllib.request.Request(
                    url, headers={"dapr-api-token": token} if token else {}
                )
                with urllib.request.urlopen(request, timeout=10) as reply:
                    body = reply.read()
            else:
                body = json.dumps({**outcome(), "served_by": os.environ["APP_ID"]}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Handler).serve_forever()
    """
)


def run_file(root: Path) -> Path:
    (root / "apps").mkdir()
    (root / "apps" / "app.py").write_text(ATTACKER)
    path = root / "dapr.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            apps:
              - appID: ungranted-app
                appDirPath: ./apps
                appPort: 0
                command: ["{SYSTEM_PYTHON}", "app.py"]
              - appID: caller
                appDirPath: ./apps
                appPort: 0
                command: ["{SYSTEM_PYTHON}", "app.py"]
            """
        )
    )
    return path


def get_json(url: str, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def all_cmdlines() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                out.append((entry / "cmdline").read_bytes().decode("utf-8", "replace"))
    return out


@pytest.fixture
def mesh_run():
    if os.geteuid() != 0:
        pytest.skip("switching users needs root (the non-root case is the next test)")
    if not SYSTEM_PYTHON.exists():
        pytest.skip(f"no {SYSTEM_PYTHON} that an unprivileged user can run")
    with app_reachable_dir() as root:
        yield from _run(root)


def _run(root: Path):
    home = root / "mesh"
    path = run_file(root)
    log = (root / "run.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "-f", str(path), "--home", str(home)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=root,
        env={**os.environ, "NO_COLOR": "1"},
    )
    output = root / "run.log"
    deadline = time.monotonic() + 60
    while READY not in output.read_text() and runner.poll() is None:
        assert time.monotonic() < deadline, output.read_text()
        time.sleep(0.1)
    assert runner.poll() is None, output.read_text()
    state = read_state(state_path(home, path))
    assert state is not None
    try:
        yield home, path, state, output
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
        log.close()


def app_port(state, app_id: str) -> int:
    pid = next(c.pid for c in state.children if c.role == "app" and c.app_id == app_id)
    return int(environ_of(pid)["APP_PORT"])


def drive(state, app_id: str, path: str):
    """Ask an app to do something, as its own sidecar would: with its APP_API_TOKEN (the test
    runs as root and reads it from the app's environment; the app refuses anyone without it)."""
    pid = next(c.pid for c in state.children if c.role == "app" and c.app_id == app_id)
    env = environ_of(pid)
    url = f"http://127.0.0.1:{env['APP_PORT']}{path}"
    return get_json(url, {"dapr-api-token": env["APP_API_TOKEN"]})


def test_an_app_cannot_read_the_ca_key_or_write_mesh_state_and_still_serves(mesh_run):
    home, _, state, output = mesh_run
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "ca" / "root.key").stat().st_mode) == 0o600

    # The twin first: caller app → its sidecar (with its token) → mTLS → the app, as a user.
    status, answer = drive(state, "caller", "/call/ungranted-app")
    assert status == 200, answer
    assert answer["served_by"] == "ungranted-app"
    # The attack, as the app itself reports it: it found the home, and got nowhere with it.
    assert answer["home"] == str(home)
    assert answer["uid"] != 0
    assert answer["read_ca_key"] == "EACCES"
    assert answer["read_issuer_key"] == "EACCES"
    assert answer["list_home"] == "EACCES"
    assert answer["write_registry"] == "EACCES"
    assert answer["read_sidecar_environ"] == "EACCES"
    assert answer["read_sibling_environ"] and set(answer["read_sibling_environ"]) == {"EACCES"}
    assert not (home / "registry" / "default" / "admin-agent.json").exists()
    assert "runs as nobody" not in output.read_text()  # nobody is the default, not a warning


def test_the_sidecar_refuses_a_local_process_without_the_apps_token(mesh_run):
    home, path, state, _ = mesh_run
    app_pid = next(c.pid for c in state.children if c.role == "app" and c.app_id == "caller")
    env = environ_of(app_pid)
    token = env["DAPR_API_TOKEN"]
    url = f"http://127.0.0.1:{env['DAPR_HTTP_PORT']}/v1.0/invoke/ungranted-app/method/attempts"

    status, _ = get_json(url)  # any local process, borrowing the caller's identity
    assert status == 401
    status, _ = get_json(url, {"dapr-api-token": "not-the-token"})
    assert status == 401
    status, answer = get_json(url, {"dapr-api-token": token})  # the app itself
    assert status == 200 and answer["served_by"] == "ungranted-app"

    # Handed over by environment only: no command line and no state file shows a token.
    tokens = {
        environ_of(c.pid)["DAPR_API_TOKEN"] for c in state.children if c.role in ("app", "sidecar")
    }
    assert len(tokens) == 2  # one per app, shared by the app and its own sidecar only
    assert not [line for line in all_cmdlines() for t in tokens if t in line]
    state_file = state_path(home, path)
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    for file in home.rglob("*"):
        if file.is_file():
            assert not any(t.encode() in file.read_bytes() for t in tokens), file


def test_an_app_refuses_a_local_process_that_bypassed_its_sidecar(mesh_run):
    _, _, state, _ = mesh_run
    app_pid = next(c.pid for c in state.children if c.role == "app" and c.app_id == "caller")
    assert environ_of(app_pid)["APP_API_TOKEN"]
    status, _ = get_json(f"http://127.0.0.1:{app_port(state, 'ungranted-app')}/attempts")
    assert status == 401  # straight to the app's port: no token
    status, answer = drive(state, "caller", "/call/ungranted-app")
    assert status == 200 and answer["served_by"] == "ungranted-app"  # through the sidecar
