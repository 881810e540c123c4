"""Real MCP servers behind real sidecars, for the end-to-end MCP policy suites.

One :class:`McpMesh` per test module: a mesh home, the session's CA, and a process set stopped
when the module ends (each MCP server start costs about a second, so modules share them). Every
port comes from the OS; every process is awaited by its ready line or, for the example server
(which prints its line before it listens), by a connect probe.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests._support.procs import REPO, Proc, ProcessSet

TRUSTMESH = [sys.executable, "-m", "sidecar"]
EXAMPLE_SERVER = REPO / "examples" / "mcp-access-control" / "mcp_server" / "server.py"
CLIENT_ID = "mcp-client"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Readiness probe: the port accepts a connection (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{proc.name} is not listening on {port}:\n{proc.stderr()[-3000:]}")


class RequestLog:
    """The logging server's record of what reached it (see ``mcp_logging_server``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def bodies(self) -> list[bytes]:
        return [base64.b64decode(e["body_b64"]) for e in self.entries()]

    def received(self, body: bytes) -> bool:
        return body in self.bodies()


class McpMesh:
    def __init__(self, mesh) -> None:
        self.mesh = mesh  # tests.integration.conftest.Mesh
        self.home = mesh.home
        self.procs: ProcessSet = mesh.procs
        self.root: Path = mesh.root

    # --- the control plane ----------------------------------------------------------------

    def tm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*TRUSTMESH, *args, "--home", str(self.home)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def register(self, server_id: str) -> None:
        self.tm("mcpserver", "create", server_id, "--wait")

    def grant(self, server_id: str, caller: str, tools: str) -> None:
        self.tm("mcpserver", "access", "grant", server_id, "--caller", caller,
                "--allow-tools", tools, "--wait")  # fmt: skip

    def revoke(self, server_id: str, caller: str, tools: str | None = None) -> None:
        what = ["--all"] if tools is None else ["--allow-tools", tools]
        self.tm("mcpserver", "access", "revoke", server_id, "--caller", caller, *what, "--wait")

    # --- processes ------------------------------------------------------------------------

    def sidecar(self, app_id: str, app_port: int | None = None) -> Proc:
        return self.mesh.sidecar(app_id, app_port=app_port)

    def example_server(self, name: str, *, mode: str, stateless: bool = False) -> tuple[Proc, int]:
        port = free_port()
        env = {
            "APP_PORT": str(port),
            "MCP_RESPONSE_MODE": mode,
            "MCP_STATELESS": "1" if stateless else "0",
            # Nothing listens here: get_weather_alert fails inside the server, as it should.
            "DAPR_HTTP_PORT": str(free_port()),
        }
        proc = self.procs.start(name, [sys.executable, str(EXAMPLE_SERVER)], env=env)
        wait_for_port(port, proc)
        return proc, port

    def logging_server(
        self,
        name: str,
        *,
        mode: str = "json",
        stateless: bool = True,
        legacy_only: bool = False,
        event_store: bool = False,
    ) -> tuple[Proc, RequestLog]:
        log = RequestLog(self.root / f"{name}.requests.jsonl")
        env = {
            "MCP_REQUEST_LOG": str(log.path),
            "MCP_RESPONSE_MODE": mode,
            "MCP_STATELESS": "1" if stateless else "0",
            "MCP_LEGACY_ONLY": "1" if legacy_only else "0",
            "MCP_EVENT_STORE": "1" if event_store else "0",
        }
        proc = self.procs.start(
            name, [sys.executable, "-m", "tests._support.mcp_logging_server"], env=env
        )
        return proc, log

    def fake_upstream(self, name: str) -> Proc:
        return self.procs.start(name, [sys.executable, "-m", "tests._support.fake_mcp_upstream"])


def invoke_url(client: Proc, app_id: str, path: str = "mcp") -> str:
    """The caller app's view: Dapr service invocation on its own sidecar's outbound port."""
    return f"{client.url()}/v1.0/invoke/{app_id}/method/{path}"


async def sdk(url: str, mode: str, action: str, args: dict | None = None) -> dict:
    """The official ``mcp`` client, in-process (``mcp_probe.run``), reporting like the probe."""
    from tests._support.mcp_probe import run

    try:
        return await run(url, mode, action, args or {})
    except Exception as exc:
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


class PolicyState:
    """Bring an MCP server's policy to a wanted state with ``grant``/``revoke`` (and ``--wait``),
    running only the commands the difference needs, so parametrized tests that want the same
    state share one change."""

    def __init__(self, mesh: McpMesh) -> None:
        self.mesh = mesh
        self.known: dict[str, dict[str, frozenset[str]]] = {}
        self.commands: list[tuple[str, ...]] = []

    def ensure(self, server_id: str, wanted: dict[str, str]) -> None:
        target = {caller: frozenset(tools.split(",")) for caller, tools in wanted.items()}
        current = self.known.pop(server_id, None)
        if current is None:  # unknown: start again from deny-all
            for caller in (CLIENT_ID, "*"):
                self._run("revoke", server_id, caller, None)
            current = {}
        for caller in sorted(current.keys() - target.keys()):
            self._run("revoke", server_id, caller, None)
        for caller, tools in sorted(target.items()):
            have = current.get(caller, frozenset())
            if tools - have:
                self._run("grant", server_id, caller, ",".join(sorted(tools - have)))
            if have - tools:
                self._run("revoke", server_id, caller, ",".join(sorted(have - tools)))
        self.known[server_id] = target

    def _run(self, verb: str, server_id: str, caller: str, tools: str | None) -> None:
        self.commands.append((verb, server_id, caller, tools or "--all"))
        if verb == "grant":
            self.mesh.grant(server_id, caller, tools)
        else:
            self.mesh.revoke(server_id, caller, tools)
