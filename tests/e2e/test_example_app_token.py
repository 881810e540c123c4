"""#10.6: the example servers refuse whatever did not come through their sidecar.

With ``APP_API_TOKEN`` set (``trustmesh run`` sets it once the sidecar sends it), each example
server serves only requests carrying it as exactly one ``dapr-api-token`` header: a local
process posting to the app's port directly gets 401, the sidecar's request (the twin) is served.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = "app-token-for-this-test"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(script: Path, tmp_path: Path, **env: str):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, script.name],
        cwd=script.parent,
        env={**os.environ, "APP_PORT": str(port), "APP_API_TOKEN": TOKEN, **env},
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / f"{script.stem}.err").open("wb"),
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            assert proc.poll() is None, (tmp_path / f"{script.stem}.err").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.fixture
def server(request, tmp_path):
    script, env = request.param
    proc, port = start(
        EXAMPLES / script, tmp_path, **{k: v.format(tmp=tmp_path) for k, v in env.items()}
    )
    yield script, port
    proc.terminate()
    proc.wait(10)


SERVERS = [
    ("mcp-access-control/weather_service/service.py", {}),
    ("mcp-access-control/mcp_server/server.py", {}),
    ("per-tool-servers/db_server/server.py", {"DB_ROLE": "schema", "DB_PATH": "{tmp}/db.sqlite"}),
]


def send(script: str, port: int, headers: list[tuple[str, str]]) -> httpx.Response:
    if script.endswith("service.py"):
        return httpx.get(f"http://127.0.0.1:{port}/alerts?city=chicago", headers=headers)
    return httpx.post(
        f"http://127.0.0.1:{port}/mcp",
        headers=[*MCP_HEADERS.items(), *headers],
        content=json.dumps(INITIALIZE),
    )


@pytest.mark.parametrize("server", SERVERS, indirect=True, ids=lambda s: s[0].split("/")[1])
def test_a_request_that_bypassed_the_sidecar_is_refused_and_the_sidecars_is_served(server):
    script, port = server
    for headers in (
        [],  # a local process posting to the app's port directly
        [("dapr-api-token", "guess")],
        [("dapr-api-token", TOKEN[:-1])],
        [("dapr-api-token", TOKEN), ("dapr-api-token", TOKEN)],
    ):
        refused = send(script, port, headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert "through its sidecar" in refused.json()["error"]
    served = send(script, port, [("dapr-api-token", TOKEN)])  # what the sidecar sends
    assert served.status_code == 200, served.text
