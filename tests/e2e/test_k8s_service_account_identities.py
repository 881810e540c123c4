"""The quickstart with the identities SPIRE and cert-manager actually issue.

Each sidecar reads its SVID from files (``--svid-dir``) holding ``spiffe://public/ns/default/sa/
<service-account>``: mcp-server and weather-service run under ServiceAccounts named like their App
IDs (the default mapping), mcp-client runs as ServiceAccount ``agent-runner``, bound to App ID
``mcp-client`` with an ``AppIdentityBinding`` and laid out as csi-driver-spiffe writes it
(``tls.crt``/``tls.key``/``ca.crt``). The tutorial's three scenarios must come out as on one
host with the bundled CA, and the audit must name the certificates' real SPIFFE IDs.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
from pathlib import Path

import pytest

from ca.home import ca_layout
from ca.store import load_ca
from identity import AppIdentity, SpiffeId, save_svid_dir
from tests._support import k8s_quickstart as qs
from tests._support.procs import TRUSTMESH, ProcessSet

pytestmark = pytest.mark.e2e

SERVICE_ACCOUNTS = {"mcp-client": "agent-runner", "mcp-server": "mcp-server"}
SERVICE_ACCOUNTS["weather-service"] = "weather-service"
BINDING = """\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {name: agent-runner}
spec:
  spiffeID: spiffe://public/ns/default/sa/agent-runner
  appID: mcp-client
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _trustmesh(home: Path, *args: str) -> str:
    result = subprocess.run(
        [*TRUSTMESH, *args, "--home", str(home)] if args[0] == "ca" else [*TRUSTMESH, *args],
        capture_output=True,
        text=True,
        env={"TRUSTMESH_HOME": str(home), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _issue_service_account_svid(home: Path, app_id: str, out: Path, cert_manager: bool) -> str:
    """Sign ``.../ns/default/sa/<sa>`` with the mesh CA, as SPIRE or cert-manager would."""
    authority = load_ca(ca_layout(home))
    spiffe_id = SpiffeId.from_parts("public", "ns", "default", "sa", SERVICE_ACCOUNTS[app_id])
    identity = AppIdentity("public", "default", SERVICE_ACCOUNTS[app_id], source=spiffe_id)
    svid = authority.issue(identity, now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(hours=1))
    if cert_manager:
        out.mkdir(parents=True)
        (out / "tls.crt").write_bytes(svid.chain_pem())
        (out / "tls.key").write_bytes(svid.key_pem())
        (out / "ca.crt").write_bytes(authority.bundle.to_pem())
    else:
        save_svid_dir(out, svid, authority.bundle)
    return str(spiffe_id)


def test_quickstart_scenarios_pass_with_service_account_identities(tmp_path: Path) -> None:
    home = tmp_path / "mesh"
    _trustmesh(home, "ca", "init")
    (tmp_path / "binding.yaml").write_text(BINDING)
    _trustmesh(home, "apply", "-f", str(tmp_path / "binding.yaml"))
    places = {}
    for app_id in qs.APP_SCRIPTS:
        svid_dir = tmp_path / "svids" / app_id
        _issue_service_account_svid(home, app_id, svid_dir, cert_manager=app_id == "mcp-client")
        places[app_id] = qs.Placement(
            app_id,
            _free_port(),
            _free_port(),
            ["--home", str(home), "--svid-dir", str(svid_dir)],
        )
    procs = ProcessSet(tmp_path)
    try:
        for app_id in ("weather-service", "mcp-server", "mcp-client"):
            qs.start_pair(procs, places[app_id])
        client = places["mcp-client"]

        qs.await_outcome(client, qs.default_allow, "scenario 1: default allow")

        _trustmesh(home, "configuration", "create", "mcp-server-deny", "--default-action",
                   "deny", "--policy", "mcp-client:deny")  # fmt: skip
        _trustmesh(home, "appid", "update", "mcp-server", "--app-config", "mcp-server-deny")
        qs.await_outcome(client, qs.client_blocked, "scenario 2: the bound client is refused")

        _trustmesh(home, "configuration", "create", "allow", "--default-action", "allow")
        _trustmesh(home, "appid", "update", "mcp-server", "--app-config", "allow")
        _trustmesh(home, "configuration", "create", "weather-deny", "--default-action", "deny",
                   "--policy", "mcp-server:deny")  # fmt: skip
        _trustmesh(home, "appid", "update", "weather-service", "--app-config", "weather-deny")
        qs.await_outcome(client, qs.downstream_blocked, "scenario 3: downstream call refused")

        # Tool grants name App IDs too: the bound ServiceAccount gets mcp-client's grant.
        _trustmesh(home, "appid", "update", "weather-service", "--app-config", "allow")
        _trustmesh(home, "mcpserver", "create", "mcp-server")
        _trustmesh(home, "mcpserver", "access", "grant", "mcp-server", "--caller", "mcp-client",
                   "--allow-tools", "add,get_weather_alert")  # fmt: skip

        def filtered(status: int, body: dict) -> bool:
            names = [t["name"] for t in body.get("tools", [])]
            return status == 200 and names == ["add", "get_weather_alert"]

        qs.await_outcome(client, filtered, "tools/list filtered for the bound identity")
    finally:
        procs.stop_all()

    records = [
        json.loads(line)
        for line in (home / "audit" / "default.mcp-server.jsonl").read_text().splitlines()
    ]
    # The server's own inbound decisions (its log also holds its outbound calls and checkpoints).
    records = [r for r in records if r["kind"] == "decision" and r["direction"] == "inbound"]
    callers = {r["caller"] for r in records}
    assert "spiffe://public/ns/default/sa/agent-runner" in callers
    denied = [r for r in records if r["decision"] == "deny"]
    assert denied and all(r["caller"].endswith("/sa/agent-runner") for r in denied)
    assert all(r["callee"] == "spiffe://public/ns/default/sa/mcp-server" for r in records)
