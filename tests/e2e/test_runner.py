"""``trustmesh run -f`` end to end: real CA, sidecars and apps; nothing outlives the run."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from sidecar.registry import pid_alive
from sidecar.runner.control import is_zombie
from sidecar.runner.runstate import read_state, state_path
from tests._support.runner_dirs import pin_app_user, user_for_python_apps

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0


def command(name: str) -> list[str]:
    return [sys.executable, "-c", f"from sidecar.cli_run import {name}; {name}()"]


APP = textwrap.dedent(
    """
    import json, os, urllib.request
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            print("served", self.path, flush=True)

        def do_GET(self):
            if self.path.startswith("/call/"):
                port = os.environ["DAPR_HTTP_PORT"]
                target = self.path.removeprefix("/call/")
                url = f"http://127.0.0.1:{port}/v1.0/invoke/{target}/method/hello"
                token = os.environ.get("DAPR_API_TOKEN")
                headers = {"dapr-api-token": token} if token else {}
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=10) as reply:
                    body = reply.read()
            else:
                body = json.dumps({
                    "app": os.environ["APP_ID"],
                    "greeting": os.environ.get("GREETING"),
                    "caller": self.headers.get("dapr-caller-app-id"),
                }).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    print("listening on", os.environ["APP_PORT"], flush=True)
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["APP_PORT"])), Handler).serve_forever()
    """
)

CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: server-config
spec:
  accessControl:
    defaultAction: allow
    trustDomain: public
"""


class Run:
    """A ``trustmesh run`` process, its output file, and the pids it reported."""

    def __init__(
        self, root: Path, run_file: Path, args: list[str] | None = None, cwd: Path = REPO
    ) -> None:
        """``run -f run_file``; or ``run *args`` in ``cwd``, recorded as ``run_file``."""
        self.root = root
        self.home = root / "home"
        self.run_file = run_file
        self.out_path = root / f"{run_file.stem}.out"
        self.err_path = root / f"{run_file.stem}.err"
        args = args if args is not None else ["-f", str(run_file)]
        self.popen = subprocess.Popen(
            [*command("run_command"), "--home", str(self.home), *args],
            stdout=subprocess.PIPE,
            stderr=self.err_path.open("wb"),
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
        )
        self.lines: list[str] = []

    def read_until(self, marker: str, timeout: float = READY_TIMEOUT) -> bool:
        """Read stdout lines until one contains ``marker``; False if the run ended first."""
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.popen.stdout], [], [], 0.2)
            if not readable:
                continue
            data = os.read(self.popen.stdout.fileno(), 65536)
            if not data:
                return False
            buffer += data
            *done, buffer = buffer.split(b"\n")
            for raw in done:
                line = raw.decode("utf-8", "replace")
                self.lines.append(line)
                if marker in line:
                    return True
        raise AssertionError(f"no {marker!r} within {timeout}s:\n" + "\n".join(self.lines))

    def drain(self) -> str:
        assert self.popen.stdout is not None
        rest = self.popen.stdout.read().decode("utf-8", "replace")
        self.lines += rest.splitlines()
        return "\n".join(self.lines)

    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float = 60.0) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def tm(home: Path, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*command(name), *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=90,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (a test's unique temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def assert_all_gone(pids: list[int], root: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if pid_alive(p)], "processes outlived the run"
    assert processes_mentioning(str(root)) == []


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path
    (root / "app.py").write_text(APP)
    for name in ("server", "client", "tools"):
        (root / name).mkdir()
    (root / "server" / "config.yaml").write_text(CONFIG)
    runs: list[Run] = []
    yield root, runs
    for run in runs:
        run.kill()
    for pid in processes_mentioning(str(root)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def two_apps(root: Path) -> Path:
    path = root / "dapr.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            name: e2e
            common:
              env:
                GREETING: hello
            apps:
              - appID: server
                appDirPath: ./server
                appPort: 0
                configFilePath: config.yaml
                command: ["{sys.executable}", "../app.py"]
              - appID: client
                appDirPath: ./client
                appPort: 0
                appLogDestination: console
                command: ["{sys.executable}", "../app.py"]
              - appID: tools
                appDirPath: ./tools
                mcpServer: true
            """
        )
    )
    return path


def start(root: Path, runs: list[Run], run_file: Path) -> Run:
    run = Run(root, pin_app_user(run_file))
    runs.append(run)
    assert run.read_until("You're up and running"), run.drain() + run.stderr()
    return run


def pids_of(run: Run) -> list[int]:
    state = read_state(state_path(run.home, run.run_file))
    assert state is not None
    return [state.runner_pid, *(c.pid for c in state.children)]


def test_run_invoke_list_and_sigterm_leaves_nothing(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    output = "\n".join(run.lines)
    for prefix in ("== CA == listening on", "== SIDECAR - server == ", "== APP - client == "):
        assert prefix in output
    assert "== APP - server == ready on 127.0.0.1:" in output
    assert 'no command given for app "tools"' in run.stderr()
    # Piped, sidecar logs stay JSON; each sidecar says it is ready once (the runner's line).
    sidecar = [line for line in run.lines if line.startswith("== SIDECAR - server == ")]
    assert sidecar and all(json.loads(line.split("== ", 2)[2]) for line in sidecar)
    for app_id in ("server", "client", "tools"):
        assert len(ready_lines(run.lines, app_id)) == 1, ready_lines(run.lines, app_id)

    rows = {r["app_id"]: r for r in json.loads(tm(run.home, "list_command", "-o", "json").stdout)}
    assert set(rows) == {"server", "client", "tools"}
    assert rows["server"]["configuration"] == "server-config"
    assert rows["tools"]["mcp_server"] == "/mcp" and rows["tools"]["app_pid"] is None
    assert all(r["svid_not_after"] for r in rows.values())
    assert all(isinstance(r["age_seconds"], int) for r in rows.values())
    assert all(r["started_at"].endswith("Z") for r in rows.values())  # RFC 3339, UTC
    table = tm(run.home, "list_command").stdout
    assert table.startswith("APP ID") and "server-config" in table

    # Service invocation through the mesh: client app → its sidecar → mTLS → server sidecar → app.
    client_port = rows["client"]["app_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{client_port}/call/server", timeout=15) as r:
        answer = json.loads(r.read())
    assert answer == {"app": "server", "greeting": "hello", "caller": "client"}

    # mcpServer: registered with a deny-all policy, which a restart must not overwrite.
    policy = run.home / "resources" / "mcpserverpolicies" / "tools.yaml"
    assert policy.exists()

    pids = pids_of(run)
    assert len(pids) == 1 + 1 + 1 + 3 + 2  # runner, guard, CA, three sidecars, two apps
    run.popen.send_signal(signal.SIGTERM)
    assert run.wait() == 0, run.stderr()
    output = run.drain()
    assert output.index("Stopping apps") < output.index("Stopping sidecars")
    assert output.index("Stopping sidecars") < output.index("Stopping the CA")
    assert_all_gone(pids, root)
    assert not state_path(run.home, run.run_file).exists()


def test_ctrl_c_to_the_foreground_group_stops_in_order(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    pids = pids_of(run)
    os.kill(run.popen.pid, signal.SIGINT)  # what a terminal's Ctrl+C delivers to the runner
    assert run.wait() == 0, run.stderr()
    assert "Received SIGINT" in run.drain()
    assert_all_gone(pids, root)


def test_a_failing_app_fails_the_run_naming_it(workspace):
    root, runs = workspace
    path = root / "failing.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            version: 1
            apps:
              - appID: server
                appDirPath: ./server
                appPort: 0
                command: ["{sys.executable}", "../app.py"]
              - appID: broken
                appDirPath: ./client
                appPort: 0
                command: ["{sys.executable}", "-c", "import sys; sys.exit('cannot bind: boom')"]
            """
        )
    )
    run = Run(root, pin_app_user(path))
    runs.append(run)
    assert run.wait() != 0
    run.drain()
    lines = [
        line
        for line in run.stderr().splitlines()
        if line.strip() and not line.startswith("warning: ")  # e.g. pin_app_user's "root"
    ]
    assert len(lines) == 1 and "Traceback" not in run.stderr()
    assert "app 'broken' failed to start" in lines[0]
    assert "exited with code 1" in lines[0] and "boom" in lines[0]
    assert_all_gone([], root)


def test_stop_f_stops_a_run_and_stop_app_id_stops_one_app(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    pids = pids_of(run)
    rows = {r["app_id"]: r for r in json.loads(tm(run.home, "list_command", "-o", "json").stdout)}

    result = tm(run.home, "stop_command", "--app-id", "client")
    assert "app 'client'" in result.stdout and "sidecar 'client'" in result.stdout
    assert not pid_alive(rows["client"]["sidecar_pid"]) and not pid_alive(rows["client"]["app_pid"])
    assert run.read_until("the other apps keep running")  # the runner noticed, kept the rest
    remaining = {r["app_id"] for r in json.loads(tm(run.home, "list_command", "-o", "json").stdout)}
    assert remaining == {"server", "tools"}

    result = tm(run.home, "stop_command", "-f", str(root))
    assert "stopped the run" in result.stdout
    assert run.wait(5) == 0
    assert_all_gone(pids, root)

    again = tm(run.home, "stop_command", "-f", str(root), check=False)
    assert again.returncode != 0 and "no run of" in again.stderr


# --- #14: what an operator meets ---------------------------------------------------------------


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead runner's children are reaped by whoever adopts them)."""
    return pid_alive(pid) and not is_zombie(pid)


def rows_of(home: Path) -> dict[str, dict]:
    return {r["app_id"]: r for r in json.loads(tm(home, "list_command", "-o", "json").stdout)}


def wait_until(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_runner_killed_with_sigkill_takes_its_ca_sidecars_and_apps_with_it(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    pids = pids_of(run)
    run.popen.kill()  # no chance to stop anything itself
    run.wait()
    assert wait_until(lambda: not any(running(p) for p in pids)), [p for p in pids if running(p)]
    assert processes_mentioning(str(root)) == []
    assert wait_until(lambda: not state_path(run.home, run.run_file).exists())


def test_list_and_stop_find_what_a_runner_without_its_guard_left_behind(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    state = read_state(state_path(run.home, run.run_file))
    guard = next(c.pid for c in state.children if c.role == "guard")
    others = [c.pid for c in state.children if c.role != "guard"]
    os.kill(guard, signal.SIGKILL)  # as an older runner, which had no guard, leaves them
    run.popen.kill()
    run.wait()
    time.sleep(0.5)
    assert all(running(p) for p in others)

    listing = tm(run.home, "list_command")
    assert f"the runner of {run.run_file} (pid {run.popen.pid}) is gone" in listing.stderr
    assert f"'trustmesh stop -f {run.run_file}'" in listing.stderr
    rows = {r["app_id"]: r for r in json.loads(tm(run.home, "list_command", "-o", "json").stdout)}
    assert all(r["orphaned"] for r in rows.values()) and rows["client"]["app_pid"]

    stopped = tm(run.home, "stop_command", "--app-id", "client").stdout
    assert "app 'client'" in stopped and "sidecar 'client'" in stopped
    assert not running(rows["client"]["app_pid"]) and not running(rows["client"]["sidecar_pid"])
    result = tm(run.home, "stop_command", "-f", str(root / "dapr.yaml"))
    assert "was gone" in result.stdout
    assert_all_gone([p for p in others if p != rows["client"]["app_pid"]], root)
    assert "is gone" not in tm(run.home, "list_command").stderr


def one_app(root: Path, name: str, **fields: int) -> Path:
    path = root / name
    extra = "".join(f"\n    {key}: {value}" for key, value in fields.items())
    path.write_text(
        "version: 1\napps:\n  - appID: server\n    appDirPath: ./server\n"
        f'    command: ["{sys.executable}", "../app.py"]{extra or chr(10) + "    appPort: 0"}\n'
    )
    return pin_app_user(path)


@pytest.mark.parametrize("field", ["appPort", "daprHTTPPort"])
def test_a_taken_port_is_refused_before_anything_starts_naming_app_field_and_port(workspace, field):
    root, runs = workspace
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = Run(root, one_app(root, "taken.yaml", **{field: port}))
        runs.append(run)
        assert run.wait() != 0
    output = run.drain()
    errors = [line for line in run.stderr().splitlines() if not line.startswith("warning: ")]
    assert errors == [
        f"Error: app 'server': {field} {port} is already in use by another "
        "process; free it or choose another port"
    ]
    assert "Started the CA" not in output and "Created a CA" not in output  # nothing started


def test_run_refuses_an_app_id_that_a_live_sidecar_holds(workspace):
    root, runs = workspace
    first = start(root, runs, two_apps(root))
    rows = rows_of(first.home)
    second = Run(root, one_app(root, "again.yaml"))
    runs.append(second)
    assert second.wait() != 0
    second.drain()
    holder = rows["server"]["sidecar_pid"]
    assert f"app ID 'server' is already held by a running sidecar (pid {holder})" in second.stderr()
    assert "trustmesh stop --app-id server" in second.stderr()
    after = {
        r["app_id"]: r for r in json.loads(tm(first.home, "list_command", "-o", "json").stdout)
    }
    assert after["server"]["sidecar_pid"] == rows["server"]["sidecar_pid"]  # untouched


def test_logs_go_under_the_home_and_trustmesh_logs_prints_and_follows_them(workspace):
    root, runs = workspace
    run = start(root, runs, two_apps(root))
    log = run.home / "logs" / "server.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert not list(root.glob("*/.trustmesh"))  # nothing written into the apps' directories
    printed = tm(run.home, "logs_command", "--app-id", "server").stdout
    assert "== APP - server == listening on" in printed
    assert "== SIDECAR - server ==" not in printed  # daprdLogDestination defaults to console

    follower = subprocess.Popen(
        [*command("logs_command"), "--app-id", "server", "-f", "--home", str(run.home)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        rows = {
            r["app_id"]: r for r in json.loads(tm(run.home, "list_command", "-o", "json").stdout)
        }
        url = f"http://127.0.0.1:{rows['client']['app_port']}/call/server"
        urllib.request.urlopen(url, timeout=15).close()
        seen = b""
        deadline = time.monotonic() + 15
        while b"served /hello" not in seen and time.monotonic() < deadline:
            if select.select([follower.stdout], [], [], 0.2)[0]:
                seen += os.read(follower.stdout.fileno(), 65536)
        assert b"== APP - server == served /hello" in seen
    finally:
        follower.terminate()
        follower.wait(5)

    missing = tm(run.home, "logs_command", "--app-id", "nope", check=False)
    assert missing.returncode != 0
    assert f"no log for app ID 'nope' in {run.home / 'logs'}" in missing.stderr


def test_a_single_app_runs_without_a_run_file_as_dapr_run_does(workspace):
    root, runs = workspace
    user = user_for_python_apps()
    args = ["--app-id", "solo", "--app-port", "0", "--mcp-server"]
    args += ["--user", user] if user else []
    args += ["--", sys.executable, "../app.py"]
    run = Run(root, root / "server" / "solo", args, cwd=root / "server")
    runs.append(run)
    assert run.read_until("You're up and running"), run.drain() + run.stderr()
    rows = rows_of(run.home)
    assert set(rows) == {"solo"} and rows["solo"]["mcp_server"] == "/mcp"
    port = rows["solo"]["app_port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
        assert json.loads(reply.read())["app"] == "solo"
    assert "stopped app 'solo'" in tm(run.home, "stop_command", "--app-id", "solo").stdout
    assert run.wait(20) == 0, run.stderr()
    assert_all_gone([], root)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either -f FILE or --app-id ID"),
        (["-f", "x.yaml", "--app-id", "a"], "give either -f FILE or --app-id ID"),
        (["-f", "x.yaml", "--app-port", "5000"], "--app-port: only with --app-id"),
        (["--app-id", "Bad_ID!"], "--app-id:"),
    ],
)
def test_run_says_which_form_it_takes(tmp_path, args, message):
    result = tm(tmp_path / "home", "run_command", *args, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert message in result.stderr


def ready_lines(lines: list[str], app_id: str) -> list[str]:
    """Every line that tells the user this app's sidecar is ready."""
    return [
        line
        for line in lines
        if (line.startswith(f"== SIDECAR - {app_id} == ") and "ready" in line)
        or line.startswith(f'Started sidecar with app id "{app_id}"')
    ]


def test_on_a_terminal_sidecar_logs_are_readable_lines_and_each_sidecar_says_ready_once(
    workspace,
):
    root, _ = workspace
    run_file = pin_app_user(two_apps(root))
    controller, terminal = pty.openpty()
    runner = subprocess.Popen(
        [*command("run_command"), "--home", str(root / "home"), "-f", str(run_file)],
        stdout=terminal,
        stderr=terminal,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"},
    )
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b"You're up and running" not in seen and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    seen += os.read(controller, 65536)
                except OSError:  # EIO: the runner has gone
                    break
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(30)
        os.close(controller)
    lines = seen.decode("utf-8", "replace").replace("\r\n", "\n").splitlines()
    assert b"You're up and running" in seen, "\n".join(lines)
    sidecar = [line for line in lines if line.startswith("== SIDECAR - server == ")]
    assert sidecar and not [line for line in sidecar if line.split("== ", 2)[2].startswith("{")]
    assert any("[info" in line and "svid installed" in line for line in sidecar), sidecar
    ca = [line for line in lines if line.startswith("== CA == ")]
    assert any("[info" in line and "ca listening" in line for line in ca), ca
    assert not [line for line in ca if line.split("== ", 2)[2].startswith("{")]
    # No Python reprs: lists and mappings read as text (addresses=https://…, not ['https://…']).
    assert not [line for line in sidecar + ca if "['" in line or "{'" in line]
    for app_id in ("server", "client", "tools"):
        assert len(ready_lines(lines, app_id)) == 1, ready_lines(lines, app_id)


def test_a_slow_start_says_what_it_is_waiting_for(workspace):
    root, runs = workspace
    slow = (
        "import os, socket, time; time.sleep(1.5); s = socket.socket(); "
        "s.bind(('127.0.0.1', int(os.environ['APP_PORT']))); s.listen(); time.sleep(600)"
    )
    user = user_for_python_apps()
    args = ["--progress-every", "0.2", "--app-id", "slow", "--app-port", "0"]
    args += ["--user", user] if user else []
    run = Run(root, root / "slow", [*args, "--", sys.executable, "-c", slow], cwd=root)
    runs.append(run)
    assert run.read_until("You're up and running"), run.drain() + run.stderr()
    waiting = [line for line in run.lines if line.startswith("Still waiting for app 'slow'")]
    assert waiting and "to accept connections on 127.0.0.1:" in waiting[0]
    assert waiting[0].endswith("of 30s)")


def git(tree: Path, *args: str) -> str:
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    return subprocess.run(
        ["git", *ident, *args], cwd=tree, capture_output=True, text=True, check=True
    ).stdout


def test_a_run_writes_nothing_into_the_tree_and_make_clean_leaves_it_as_cloned(workspace):
    root, runs = workspace
    tree = root / "tree"
    for name in filter(None, git(REPO, "ls-files", "-z").split("\0")):
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "as cloned")
    service = tree / "examples" / "mcp-access-control" / "weather_service"

    user = user_for_python_apps()
    args = ["--app-id", "weather", "--app-port", "0", *(["--user", user] if user else [])]
    run = Run(root, service / "weather", [*args, "--", sys.executable, "service.py"], cwd=service)
    runs.append(run)
    assert run.read_until("You're up and running"), run.drain() + run.stderr()
    tm(run.home, "stop_command", "--app-id", "weather")
    assert run.wait(20) == 0
    assert (run.home / "logs" / "weather.log").exists()
    assert git(tree, "status", "--porcelain", "--ignored") == ""  # logs went to the home

    # What using the tree leaves behind: a mesh home made by a command run in an example's
    # directory (as the READMEs do), bytecode.
    subprocess.run(
        [sys.executable, "-m", "sidecar", "ca", "init"],
        cwd=service,
        env={k: v for k, v in os.environ.items() if k != "TRUSTMESH_HOME"},
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, "-m", "compileall", "-q", "examples"], cwd=tree, check=True)
    assert git(tree, "status", "--porcelain", "--ignored") != ""
    subprocess.run(["make", "clean"], cwd=tree, check=True, capture_output=True)
    assert git(tree, "status", "--porcelain", "--ignored") == ""
