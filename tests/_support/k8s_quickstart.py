"""The hosted quickstart's three apps and scenarios, placed wherever a test puts them.

The single-host identity test (SPIRE-shaped SVIDs from files) and the multi-host test (network
namespaces) run the same three apps and check the same three outcomes; only where each process
runs (``prefix``: e.g. ``ip netns exec NS``), how its sidecar gets an identity and how policy
changes differ. The checks mirror ``sidecar/demo.py``'s tutorial scenarios.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests._support.procs import REPO, TRUSTMESH, Proc, ProcessSet

EXAMPLE = REPO / "examples" / "mcp-access-control"
APP_SCRIPTS = {
    "mcp-client": EXAMPLE / "mcp_client" / "client.py",
    "mcp-server": EXAMPLE / "mcp_server" / "server.py",
    "weather-service": EXAMPLE / "weather_service" / "service.py",
}
TOOLS = ["add", "get_weather_alert", "echo"]


@dataclass
class Placement:
    """One app and its sidecar: ports, sidecar arguments, and the command prefix to run in."""

    app_id: str
    app_port: int
    http_port: int
    sidecar_args: list[str]
    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def start_pair(procs: ProcessSet, place: Placement) -> tuple[Proc, Proc]:
    """The sidecar first (it must be ready before its app calls out), then the app."""
    sidecar = procs.start(
        f"sidecar-{place.app_id}",
        [
            *place.prefix,
            *TRUSTMESH,
            "sidecar",
            "--app-id",
            place.app_id,
            "--app-port",
            str(place.app_port),
            "--http-port",
            str(place.http_port),
            *place.sidecar_args,
        ],
        env=place.env,
    )
    app = procs.start(
        place.app_id,
        [*place.prefix, sys.executable, str(APP_SCRIPTS[place.app_id])],
        env={**place.env, "APP_PORT": str(place.app_port), "DAPR_HTTP_PORT": str(place.http_port)},
    )
    return sidecar, app


def run_client(client: Placement, timeout: float = 60.0) -> tuple[int, dict]:
    """``curl -X POST localhost:<client port>/run`` from wherever the client runs."""
    script = (
        "import json,sys,urllib.request,urllib.error\n"
        f"r=urllib.request.Request('http://127.0.0.1:{client.app_port}/run',data=b'',"
        "method='POST')\n"
        "try:\n"
        f"  s=urllib.request.urlopen(r,timeout={timeout})\n"
        "  print(s.status);print(s.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "  print(e.code);print(e.read().decode())\n"
    )
    out = subprocess.run(
        [*client.prefix, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=True,
    ).stdout
    status, _, body = out.partition("\n")
    return int(status), json.loads(body)


def default_allow(status: int, body: dict) -> bool:
    return (
        status == 200
        and [t["name"] for t in body["tools"]] == TOOLS
        and body["add_result"] == "5"
        and bool(body["weather_alert"])
        and body["errors"] == []
    )


def client_blocked(status: int, body: dict) -> bool:
    return status == 403 and body["detail"]["error"] == "ACCESS_DENIED"


def downstream_blocked(status: int, body: dict) -> bool:
    return (
        status == 200
        and body["add_result"] == "5"
        and body["weather_alert"] is None
        and any(e["tool"] == "get_weather_alert" and "403" in e["error"] for e in body["errors"])
    )


def await_outcome(client: Placement, check, what: str, timeout: float = 20.0) -> dict:
    """Run the client until ``check`` holds (policy reaches sidecars asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = run_client(client)
        if check(status, body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: got {status} {json.dumps(body)}")
        time.sleep(0.2)


def configuration(name: str, default_action: str, deny: str | None = None) -> dict:
    """What ``trustmesh configuration create NAME --default-action A [--policy DENY:deny]``
    stores, as a document (for a ConfigMap-shaped policy directory)."""
    from sidecar.policy.configuration import build_configuration, configuration_to_document

    built = build_configuration(name, default_action, [(deny, "deny")] if deny else [])
    return configuration_to_document(built)


def write_yaml_documents(path: Path, documents: list[dict]) -> None:
    import yaml

    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
