"""``make demo``: the MCP access-control quickstart, end to end, on the embedded defaults.

Starts the quickstart's three apps with ``trustmesh run -f`` (CA, sidecars and apps in a
temporary mesh directory, on free ports), then walks the hosted tutorial's three scenarios,
changing policy between them with the same commands a user types — no restarts, ``--wait``
returns once every sidecar enforces the change — and prints each command and what it returns.
Exits non-zero if any scenario does not come out as the tutorial says, and leaves no process
behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "mcp-access-control"
READY_LINE = "You're up and running"
START_TIMEOUT = 90.0


class DemoFailed(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bold(text: str) -> str:
    return f"\033[1m{text}\033[0m" if sys.stdout.isatty() else text


def _say(text: str = "") -> None:
    print(text, flush=True)


def _app_user() -> str | None:
    """As root the runner starts each app as an unprivileged user of its own; where such a user
    cannot run this interpreter (one installed under ``/root``), the demo's apps run as root
    instead, and the runner's warning says what that costs."""
    from sidecar.runner.users import app_user, can_switch_users, unreachable

    if not can_switch_users():
        return None
    user = app_user(None, "demo")
    if user is None or unreachable(user, Path("/"), [sys.executable], {}) is None:
        return None
    return "root"


def _write_run_file(workdir: Path) -> tuple[Path, int]:
    """The example's run file, with absolute app paths and free ports."""
    run = yaml.safe_load((EXAMPLE / "mcp-quickstart.yaml").read_text())
    client_port = 0
    for app in run["apps"]:
        app["appDirPath"] = str((EXAMPLE / app["appDirPath"]).resolve())
        app["appPort"] = _free_port()
        if app["appID"] == "mcp-client":
            client_port = app["appPort"]
    if (user := _app_user()) is not None:
        run.setdefault("common", {})["user"] = user
    path = workdir / "mcp-quickstart.yaml"
    path.write_text(yaml.safe_dump(run, sort_keys=False))
    return path, client_port


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / "mesh"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "TRUSTMESH_HOME": str(self.home),
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
        }
        self.runner: subprocess.Popen | None = None
        self.log_path = workdir / "run.log"

    # -- the mesh -----------------------------------------------------------------------------
    def start(self, run_file: Path) -> None:
        _say(_bold("$ trustmesh run -f examples/mcp-access-control/mcp-quickstart.yaml"))
        log = self.log_path.open("w")
        self.runner = subprocess.Popen(
            [sys.executable, "-P", "-m", "sidecar", "run", "-f", str(run_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            if READY_LINE in text:
                _say("  CA, three sidecars and three apps are up (each app has its own SPIFFE ID)")
                return
            if self.runner.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-25:])
        raise DemoFailed(f"the mesh did not start; last lines of the run:\n{tail}")

    def stop(self) -> None:
        if self.runner is None or self.runner.poll() is not None:
            return
        _say(_bold("$ trustmesh stop -f examples/mcp-access-control/mcp-quickstart.yaml"))
        self.runner.send_signal(signal.SIGTERM)
        try:
            self.runner.wait(30)
            _say("  stopped: apps, then sidecars, then the CA")
        except subprocess.TimeoutExpired:
            os.killpg(self.runner.pid, signal.SIGKILL)
            self.runner.wait()
            raise DemoFailed("the run did not stop within 30 s; it was killed") from None

    # -- steps --------------------------------------------------------------------------------
    def trustmesh(self, *args: str) -> str:
        _say(_bold("$ trustmesh " + " ".join(args)))
        result = subprocess.run(
            [sys.executable, "-P", "-m", "sidecar", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=60,
        )
        output = (result.stdout + result.stderr).strip()
        for line in output.splitlines():
            _say(f"  {line}")
        if result.returncode != 0:
            raise DemoFailed(f"'trustmesh {' '.join(args)}' failed")
        return output

    def run_client(self, port: int) -> tuple[int, dict]:
        _say(_bold(f"$ curl -s -X POST http://localhost:{port}/run | python -m json.tool"))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/run", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
                status, body = response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            status, body = exc.code, json.loads(exc.read())
        for line in json.dumps(body, indent=2).splitlines():
            _say(f"  {line}")
        return status, body


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailed(f"expected: {what}")
    _say(f"  ✔ {what}")


def scenarios(demo: Demo, port: int) -> None:
    tools = ["add", "get_weather_alert", "echo"]

    _say()
    _say(_bold("== 1. Default allow: no configuration attached to any App ID =="))
    status, body = demo.run_client(port)
    _expect(
        status == 200 and [t["name"] for t in body["tools"]] == tools,
        "the client discovers add, get_weather_alert and echo over mTLS",
    )
    _expect(
        body["add_result"] == "5" and body["weather_alert"] and body["errors"] == [],
        "add returns 5 and the weather alert comes back from weather-service",
    )

    _say()
    _say(_bold("== 2. Block the MCP client: a deny-all configuration on mcp-server =="))
    demo.trustmesh(
        "configuration",
        "create",
        "mcp-server-deny",
        "--default-action",
        "deny",
        "--policy",
        "mcp-client:deny",
    )
    demo.trustmesh("appid", "update", "mcp-server", "--app-config", "mcp-server-deny", "--wait")
    status, body = demo.run_client(port)
    _expect(
        status == 403 and body["detail"]["error"] == "ACCESS_DENIED",
        "the client gets 403 and discovers nothing: mcp-server's sidecar refused it",
    )

    _say()
    _say(_bold("== 3. Let the client in, but block mcp-server's call to weather-service =="))
    demo.trustmesh("configuration", "create", "mcp-server-allow", "--default-action", "allow")
    demo.trustmesh("appid", "update", "mcp-server", "--app-config", "mcp-server-allow")
    demo.trustmesh(
        "configuration",
        "create",
        "weather-deny",
        "--default-action",
        "deny",
        "--policy",
        "mcp-server:deny",
    )
    demo.trustmesh("appid", "update", "weather-service", "--app-config", "weather-deny", "--wait")
    status, body = demo.run_client(port)
    _expect(status == 200 and body["add_result"] == "5", "add still works")
    _expect(body["weather_alert"] is None
            and any(e["tool"] == "get_weather_alert" and "403" in e["error"]
                    for e in body["errors"]),
            "get_weather_alert fails with 403: the downstream call was denied")  # fmt: skip

    _say()
    _say(_bold("== 4. Beyond the tutorial: tool-level policy on the MCP server itself =="))
    demo.trustmesh("configuration", "create", "weather-allow", "--default-action", "allow")
    demo.trustmesh("appid", "update", "weather-service", "--app-config", "weather-allow")
    demo.trustmesh("mcpserver", "create", "mcp-server", "--wait")
    status, body = demo.run_client(port)
    _expect(status == 403, "registered as an MCP server it starts deny-all: the session is refused")
    demo.trustmesh(
        "mcpserver",
        "access",
        "grant",
        "mcp-server",
        "--caller",
        "mcp-client",
        "--allow-tools",
        "add,get_weather_alert",
        "--wait",
    )
    status, body = demo.run_client(port)
    _expect(
        [t["name"] for t in body["tools"]] == ["add", "get_weather_alert"],
        "tools/list is filtered: echo is invisible to mcp-client",
    )
    _expect(body["add_result"] == "5" and body["weather_alert"], "granted tools work")
    demo.trustmesh(
        "mcpserver",
        "access",
        "revoke",
        "mcp-server",
        "--caller",
        "mcp-client",
        "--allow-tools",
        "get_weather_alert",
        "--wait",
    )
    status, body = demo.run_client(port)
    _expect(any(e["tool"] == "get_weather_alert" and "not granted" in e["error"]
                for e in body["errors"]),
            "a revoked tool is refused before the call reaches the server")  # fmt: skip


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="trustmesh-demo-"))
    demo = Demo(workdir)
    started = time.monotonic()
    try:
        run_file, port = _write_run_file(workdir)
        demo.start(run_file)
        scenarios(demo, port)
        _say()
        demo.stop()
        _say()
        _say(
            f"Quickstart complete in {time.monotonic() - started:.0f} s. Next: the per-tool "
            "policies in examples/tool-access/README.md."
        )
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    except (DemoFailed, OSError, subprocess.SubprocessError) as exc:
        _say(f"demo failed: {exc}")
        _say(f"(mesh directory and logs kept in {workdir})")
        return 1
    finally:
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
