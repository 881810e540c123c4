"""Run an example's README as a user would: ``trustmesh run -f`` plus the real CLI and curl.

The example's run file is copied into a temporary directory with every ``appDirPath`` made
absolute and every ``appPort`` set to ``0`` (trustmesh picks free ports; the test reads them from
``trustmesh list -o json``, as the README tells a user to), app logs sent to the console only (so
nothing is written into the repository), and ``$TRUSTMESH_HOME`` pointing into the temporary
directory. Commands run with the virtualenv's ``bin`` first on ``PATH``, as after
``. .venv/bin/activate``.

:meth:`ExampleRun.stop` stops the run with ``trustmesh stop -f`` and fails if the runner, the CA,
any sidecar or any app is still alive afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from sidecar.runner.runstate import read_state, state_path
from tests._support.runner_dirs import user_for_python_apps

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
READY_LINE = "You're up and running"
START_TIMEOUT = 60.0
GONE_TIMEOUT = 10.0


def trustmesh_argv() -> list[str]:
    """The installed ``trustmesh`` script (what a user types), or the module if not installed."""
    script = BIN / "trustmesh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sidecar"]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has exited: only its reaping is left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat[stat.rfind(")") + 2 :].startswith("Z")


class ExampleRun:
    """One example's run file, copied and started in ``root``; its CLI and its agents."""

    def __init__(self, example: Path, run_file: str, root: Path, env: dict | None = None) -> None:
        self.example = example
        self.root = root
        self.home = root / "mesh"
        self.readme = (example / "README.md").read_text()
        self.run_file = self._copy_run_file(run_file, env or {})
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "TRUSTMESH_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
        self.log_path = root / "run.log"
        self.runner: subprocess.Popen | None = None
        self.pids: set[int] = set()

    def _copy_run_file(self, name: str, env: dict) -> Path:
        run = yaml.safe_load((self.example / name).read_text())
        common = run.setdefault("common", {}) or {}
        run["common"] = common
        common["appLogDestination"] = "console"
        if (user := user_for_python_apps()) is not None:
            common["user"] = user
        common.setdefault("env", {}).update(env)
        for app in run["apps"]:
            app["appDirPath"] = str((self.example / app["appDirPath"]).resolve())
            if "appPort" in app:
                app["appPort"] = 0
        path = self.root / name
        path.write_text(yaml.safe_dump(run, sort_keys=False))
        return path

    # -- the run ------------------------------------------------------------------------------
    def start(self) -> str:
        """``python -m sidecar run -f``; wait for the ready line; return the output so far."""
        argv = [sys.executable, "-m", "sidecar", "run", "-f", str(self.run_file)]
        with self.log_path.open("wb") as log:
            self.runner = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=self.env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            output = self.output()
            if READY_LINE in output:
                self._remember_pids()
                return output
            if self.runner.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"the run did not come up:\n{self.output()[-4000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _remember_pids(self) -> None:
        assert self.runner is not None
        self.pids.add(self.runner.pid)
        state = read_state(state_path(self.home, self.run_file))
        if state is not None:
            self.pids.update(child.pid for child in state.children)

    def rows(self) -> dict[str, dict]:
        """``trustmesh list -o json`` by App ID; every pid it shows is watched by :meth:`stop`."""
        rows = json.loads(self.cli("trustmesh list -o json").stdout)
        for row in rows:
            self.pids.update(p for p in (row["sidecar_pid"], row["app_pid"]) if p)
        return {row["app_id"]: row for row in rows}

    def stop(self) -> str:
        """``trustmesh stop -f``; fail unless the runner and everything it started are gone."""
        self.rows()
        self._remember_pids()
        result = self.cli(f"trustmesh stop -f {self.run_file.name}")
        assert self.runner is not None
        code = self.runner.wait(GONE_TIMEOUT)
        assert code == 0, f"the run exited with {code}:\n{self.output()[-3000:]}"
        deadline = time.monotonic() + GONE_TIMEOUT
        while time.monotonic() < deadline and any(alive(p) for p in self.pids):
            time.sleep(0.05)
        left = sorted(p for p in self.pids if alive(p))
        assert not left, f"processes outlived the run: {left}"
        return result.stdout

    def kill_leftovers(self) -> None:
        """For teardown after a failure: stop whatever is still running, by pid."""
        if self.runner is not None and self.runner.poll() is None:
            with contextlib.suppress(Exception):
                self._remember_pids()
                self.rows()
            self.runner.send_signal(signal.SIGTERM)
            try:
                self.runner.wait(GONE_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.runner.kill()
                self.runner.wait()
        for pid in self.pids:
            if alive(pid):
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    # -- the README's commands ----------------------------------------------------------------
    def cli(
        self, command: str, *, expect: int = 0, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """Run a ``trustmesh …`` command line exactly as the README spells it.

        It runs in the temporary directory holding the run file's copy, or in ``cwd`` (the
        example's directory, for a command naming one of its files); ``$TRUSTMESH_HOME`` keeps
        the mesh state in the temporary directory either way.
        """
        argv = shlex.split(command)
        assert argv[0] == "trustmesh", command
        result = subprocess.run(
            [*trustmesh_argv(), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=cwd or self.root,
            env=self.env,
            timeout=60,
        )
        assert result.returncode == expect, (
            f"{command!r} exited {result.returncode}, expected {expect}:\n"
            f"{result.stdout}{result.stderr}"
        )
        return result

    def step(self, command: str, *, expect: int = 0, cwd: Path | None = None) -> str:
        """A README command: it must be in the README word for word; run it; its stdout."""
        assert command in self.readme, f"the README no longer says {command!r}"
        return self.cli(command, expect=expect, cwd=cwd).stdout

    def post_run(self, app_id: str, body: dict | None = None) -> dict:
        """``curl -s -X POST localhost:PORT/run`` to an agent; PORT from ``trustmesh list``."""
        port = self.rows()[app_id]["app_port"]
        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(f"http://127.0.0.1:{port}/run", data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"POST /run to {app_id}: {exc.code} {exc.read()!r}") from None
