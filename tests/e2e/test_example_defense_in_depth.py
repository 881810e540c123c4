"""``examples/defense-in-depth`` run as its README says, and held to the outputs it prints.

The example (and the two directories it uses, the quickstart's MCP server and the development
issuer) is copied to a temporary directory with every pinned port moved to a free one. Then, as
a user would, from the example's directory: ``trustmesh run -f defense-in-depth.yaml`` (home
``./.trustmesh``, the default), ``trustmesh mcpserver access get``, each ``curl … /run`` of the
README — whose answer must equal the JSON block printed under it — and ``trustmesh stop -f``.
Every process of the run (the runner's record of its children, and anything whose command line
or working directory lies in the temporary tree) must be gone afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests._support.runner_dirs import pin_app_user

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
RUN_FILE = "defense-in-depth.yaml"
PINNED_PORTS = (9000, 8000, 5101, 5102, 5103, 5104, 3502)
STARTUP_TIMEOUT = 60.0
CURL = re.compile(
    r"```sh\n(curl -s -X POST http://127\.0\.0\.1:(\d+)/run(?: -d '([^']*)')?)\n```\n\n"
    r"```json\n(.*?)\n```",
    re.DOTALL,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_block(readme: str, after: str, fence: str = "```") -> str:
    """The first fenced block after the line ``after``."""
    start = readme.index(after)
    opened = readme.index(fence, start + len(after))
    body = readme.index("\n", opened) + 1
    return readme[body : readme.index("\n```", body)]


def copy_example(root: Path) -> tuple[Path, dict[int, int]]:
    """The example tree under ``root/examples``, pinned ports rewritten; returns (dir, ports)."""
    ignore = shutil.ignore_patterns(".trustmesh", "__pycache__")
    for part in ("defense-in-depth", "mcp-access-control/mcp_server", "dev-oidc-issuer"):
        shutil.copytree(EXAMPLES / part, root / "examples" / part, ignore=ignore)
    ports = {pinned: free_port() for pinned in PINNED_PORTS}
    example = root / "examples" / "defense-in-depth"
    for path in (example / RUN_FILE, example / "resources" / "bearer-auth.yaml"):
        text = path.read_text()
        for pinned, port in ports.items():
            text = re.sub(rf"\b{pinned}\b", str(port), text)
        path.write_text(text)
    pin_app_user(example / RUN_FILE)
    return example, ports


def user_env(home_dir: Path) -> dict[str, str]:
    """The shell of a user who ran ``source .venv/bin/activate``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUSTMESH_", "DAPR_"))}
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), NO_COLOR="1", HOME=str(home_dir))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def trustmesh(example: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["trustmesh", *args], cwd=example, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def wait_until_running(runner: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if "You're up and running!" in log.read_text():
            return
        if runner.poll() is not None:
            pytest.fail(
                f"trustmesh run exited with {runner.returncode}:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.1)
    pytest.fail(f"trustmesh run not up after {STARTUP_TIMEOUT:g}s:\n{log.read_text()[-4000:]}")


def run_pids(example: Path) -> list[int]:
    """The runner and every child it recorded (CA, sidecars, apps) in its run-state file."""
    states = list((example / ".trustmesh" / "runs").glob("*.json"))
    assert len(states) == 1, states
    state = json.loads(states[0].read_text())
    return [state["runner_pid"], *(child["pid"] for child in state["children"])]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def processes_under(root: Path) -> list[str]:
    """Live processes whose command line or working directory lies in ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (str(root) in cmdline or cwd.startswith(str(root))) and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def expected_answer(raw_json: str, ports: dict[int, int]) -> dict:
    text = raw_json
    for pinned, port in ports.items():
        text = re.sub(rf"127\.0\.0\.1:{pinned}\b", f"127.0.0.1:{port}", text)
    return json.loads(text)


def test_readme_walkthrough_each_layer_stops_its_caller_and_nothing_outlives_the_run(tmp_path):
    readme = (EXAMPLES / "defense-in-depth" / "README.md").read_text()
    steps = CURL.findall(readme)
    assert [int(port) for _, port, _, _ in steps] == [5101, 5102, 5102, 5103, 5104]

    example, ports = copy_example(tmp_path)
    env = user_env(tmp_path)
    log = tmp_path / "run.log"
    runner = subprocess.Popen(
        ["trustmesh", "run", "-f", RUN_FILE],
        cwd=example,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a terminal's process group of its own, as in a shell
    )
    pids: list[int] = []
    try:
        wait_until_running(runner, log)
        pids = run_pids(example)
        started = log.read_text()
        assert "Applied the run file's policies as version 1" in started
        assert f"== APP - dev-issuer == ready on 127.0.0.1:{ports[9000]}" in started
        assert f"== APP - trusted-agent == ready on 127.0.0.1:{ports[5104]}" in started

        policy = trustmesh(example, env, "mcpserver", "access", "get", "mcp-server")
        assert policy.stdout.rstrip("\n") == readme_block(
            readme, "trustmesh mcpserver access get mcp-server\n```"
        )

        for command, port, body, answer in steps:
            response = httpx.post(
                f"http://127.0.0.1:{ports[int(port)]}/run",
                content=(body or "").encode(),
                timeout=60,
            )
            assert response.status_code == 200, (command, response.text)
            assert response.json() == expected_answer(answer, ports), command

        # The decisions were made by the layers the README names, in the server's sidecar.
        decisions = log.read_text()
        for caller, layer, status in (
            ("intruder-agent", "acl", 403),
            ("tokenless-agent", "bearer", 401),
            ("curious-agent", "mcp", 403),
        ):
            assert re.search(
                rf'== SIDECAR - mcp-server == .*"caller": "spiffe://public/ns/default/{caller}"'
                rf'.*"decision": "deny", "layer": "{layer}".*"status": {status}',
                decisions,
            ), (caller, layer)

        stopped = trustmesh(example, env, "stop", "-f", RUN_FILE)
        assert stopped.stdout.startswith(
            f"stopped the run of {example / RUN_FILE} (runner pid {runner.pid})"
        ), stopped.stdout
        assert runner.wait(30) == 0, log.read_text()[-4000:]
        assert "Stopping the CA" in log.read_text()
        assert [p for p in pids if alive(p)] == []
        assert processes_under(tmp_path) == []
        listed = trustmesh(example, env, "list")
        assert listed.stdout.strip() == f"No trustmesh instances found in {example / '.trustmesh'}."
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGTERM)
            try:
                runner.wait(20)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()
        for pid in pids:  # only the ones this run started, by pid
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
