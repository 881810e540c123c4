"""The quickstart across hosts: CA and three apps, each on its own address, sharing no directory.

Each "host" is a network namespace the test makes (``tests/_support/k8s_netns.py``) with its own
address on a private /24, its own hosts file (the cluster DNS names every sidecar and the CA), its
own mesh home and its own ConfigMap-shaped policy directory. Sidecars join the CA over the network
with one-time tokens, find each other by DNS name (``--resolve dns``, Dapr's Kubernetes
template), and read policy with ``--policy-dir``, which the test updates the way kubelet does:
a new ``..data`` directory swapped in atomically on every host. The tutorial's three scenarios
must come out as on one machine. Skipped, saying why, where namespaces are not permitted.
"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._support import k8s_quickstart as qs
from tests._support.k8s_configmap import publish
from tests._support.k8s_netns import Hosts, unavailable_reason
from tests._support.procs import TRUSTMESH, Proc, ProcessSet

pytestmark = pytest.mark.e2e

CA_NAME = "trustmesh-ca.default.svc.cluster.local"
CA_PORT = 8443
INBOUND_PORT = 50002
HOST_OF = {"mcp-client": "client", "mcp-server": "server", "weather-service": "weather"}
NAMES = {CA_NAME: "ca"} | {f"{app}-dapr.default.svc.cluster.local": h for app, h in HOST_OF.items()}
APP_PORTS = {"mcp-client": 5001, "mcp-server": 8000, "weather-service": 5002}


def _app_id_doc(app_id: str, configuration: str) -> dict:
    return {
        "apiVersion": "trustmesh.dev/v1alpha1",
        "kind": "AppID",
        "metadata": {"name": app_id, "namespace": "default"},
        "spec": {"configuration": configuration},
    }


def _policy_set(generation: int, documents: list[dict]) -> dict[str, str]:
    files = {"generation": f"{generation}\n"}
    if documents:
        import yaml

        files["policy.yaml"] = yaml.safe_dump_all(documents, sort_keys=False)
    return files


SCENARIO_2 = [
    qs.configuration("mcp-server-deny", "deny", deny="mcp-client"),
    _app_id_doc("mcp-server", "mcp-server-deny"),
]
SCENARIO_3 = [
    qs.configuration("mcp-server-allow", "allow"),
    qs.configuration("weather-deny", "deny", deny="mcp-server"),
    _app_id_doc("mcp-server", "mcp-server-allow"),
    _app_id_doc("weather-service", "weather-deny"),
]


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _await_listening(proc: Proc, timeout: float = 30.0) -> None:
    assert proc.popen.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.popen.stdout], [], [], deadline - time.monotonic())
        if not readable:
            break
        line = proc.popen.stdout.readline().decode()
        if not line:
            break
        if line.startswith("listening on "):
            return
    raise AssertionError(f"the CA did not start:\n{proc.stderr()[-3000:]}")


def _admin_get(prefix: list[str], address: str, path: str) -> str:
    """GET a sidecar's admin endpoint (127.0.0.1 on its own host) from that host."""
    script = f"import urllib.request;print(urllib.request.urlopen('http://{address}{path}').read().decode())"
    return _run([*prefix, sys.executable, "-c", script])


@pytest.fixture
def network():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"the multi-host test needs network namespaces: {reason}")
    with Hosts(["ca", "client", "server", "weather"]) as hosts:
        hosts.write_hosts_files(NAMES)
        yield hosts


def test_quickstart_scenarios_pass_across_hosts(network: Hosts, tmp_path: Path) -> None:
    ca_home = tmp_path / "ca-host" / "home"
    _run([*TRUSTMESH, "ca", "init", "--home", str(ca_home)])
    procs = ProcessSet(tmp_path)
    try:
        ca_host = network.hosts["ca"]
        ca = procs.start(
            "ca",
            [*ca_host.prefix, *TRUSTMESH, "ca", "serve", "--home", str(ca_home),
             "--listen", f"{ca_host.address}:{CA_PORT}"],
            ready=False,
        )  # fmt: skip
        _await_listening(ca)
        bundle = (ca_home / "ca" / "bundle.pem").read_bytes()
        places = {}
        policy_dirs = []
        for app_id, label in HOST_OF.items():
            host_dir = tmp_path / label  # this host's own disk: nothing is shared
            host_dir.mkdir()
            (host_dir / "bundle.pem").write_bytes(bundle)
            token = _run([*TRUSTMESH, "ca", "token", "--app-id", app_id,
                          "--home", str(ca_home)]).strip()  # fmt: skip
            publish(host_dir / "policy", _policy_set(1, []))
            policy_dirs.append(host_dir / "policy")
            places[app_id] = qs.Placement(
                app_id,
                APP_PORTS[app_id],
                3500,
                [
                    "--home",
                    str(host_dir / "home"),
                    "--ca-url",
                    f"https://{CA_NAME}:{CA_PORT}",
                    "--ca-bundle",
                    str(host_dir / "bundle.pem"),
                    "--resolve",
                    "dns",
                    "--inbound-port",
                    str(INBOUND_PORT),
                    "--inbound-host",
                    "0.0.0.0",
                    "--policy-dir",
                    str(host_dir / "policy"),
                ],
                prefix=network.hosts[label].prefix,
                env={"TRUSTMESH_JOIN_TOKEN": token},
            )
        sidecars = {}
        for app_id in ("weather-service", "mcp-server", "mcp-client"):
            sidecars[app_id], _ = qs.start_pair(procs, places[app_id])
            assert sidecars[app_id].ready["inbound"] == f"0.0.0.0:{INBOUND_PORT}"
        client = places["mcp-client"]

        # Attack first, while no connection is pooled: the client host's DNS sends mcp-server's
        # name to the weather host. Its sidecar holds a valid SVID, but not mcp-server's: the
        # client's sidecar hangs up after the handshake, before a byte of the request, so
        # weather-service's sidecar never sees a request.
        poisoned = NAMES | {"mcp-server-dapr.default.svc.cluster.local": "weather"}
        network.write_hosts_files(poisoned, only="client")
        status, body = qs.run_client(client)
        assert status == 502 and body["detail"]["error"] == "UPSTREAM_ERROR", body
        weather_audit = tmp_path / "weather" / "home" / "audit" / "default.weather-service.jsonl"
        assert not weather_audit.exists() or "mcp-client" not in weather_audit.read_text()
        metrics = _admin_get(client.prefix, sidecars["mcp-client"].ready["admin"], "/metrics")
        assert 'trustmesh_tls_handshakes_total{result="identity_mismatch"}' in metrics
        # Twin: the real name again.
        network.write_hosts_files(NAMES, only="client")

        qs.await_outcome(client, qs.default_allow, "scenario 1: default allow across hosts")

        for directory in policy_dirs:
            publish(directory, _policy_set(2, SCENARIO_2))
        qs.await_outcome(client, qs.client_blocked, "scenario 2: mcp-client refused")

        for directory in policy_dirs:
            publish(directory, _policy_set(3, SCENARIO_3))
        qs.await_outcome(client, qs.downstream_blocked, "scenario 3: downstream call refused")

    finally:
        procs.stop_all()
    # Each app listens on its own namespace's loopback, so every call above crossed the bridge;
    # the receiving sidecar's audit names the caller's certificate, issued over the network.
    server_audit = tmp_path / "server" / "home" / "audit" / "default.mcp-server.jsonl"
    assert "spiffe://public/ns/default/mcp-client" in server_audit.read_text()
