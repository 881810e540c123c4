"""``trustmesh k8s render``: manifests for the quickstart, in all three identity modes.

Every manifest validates offline against the Kubernetes schemas (``kubernetes-validate``,
strict: unknown fields refused) for 1.29 (the first release with native sidecars on by default)
and the newest bundled; then the invariants the design relies on are checked one by one.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from ca.home import ca_layout
from ca.tokens import TokenStore
from sidecar.cli import cli
from sidecar.cli_sidecar import sidecar_command
from sidecar.k8s.render import ADMIN_PORT, INBOUND_PORT, MESH_LABEL
from sidecar.state.policy_dir import PolicyDirStore
from sidecar.state.store import MeshStore
from tests._support.k8s_configmap import publish
from tests._support.k8s_quickstart import EXAMPLE

RUN_FILE = EXAMPLE / "mcp-quickstart.yaml"
APPS = ("mcp-client", "mcp-server", "weather-service")
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
BINDING = """\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {name: runner}
spec: {spiffeID: "spiffe://public/ns/default/sa/agent-runner", appID: mcp-client}
"""


def _trustmesh(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("k8s-render") / "mesh"
    h = ["--home", str(home)]
    _trustmesh("configuration", "create", "mcp-server-deny", "--default-action", "deny",
               "--policy", "mcp-client:deny", *h)  # fmt: skip
    _trustmesh("appid", "update", "mcp-server", "--app-config", "mcp-server-deny", *h)
    _trustmesh("mcpserver", "create", "mcp-server", *h)
    _trustmesh("mcpserver", "access", "grant", "mcp-server", "--caller", "mcp-client",
               "--allow-tools", "add", *h)  # fmt: skip
    (home.parent / "binding.yaml").write_text(BINDING)
    _trustmesh("apply", "-f", str(home.parent / "binding.yaml"), *h)
    return home


@pytest.fixture(scope="module")
def rendered(home) -> dict[str, list[dict]]:
    out = {}
    for mode in ("builtin", "spire", "cert-manager"):
        text = _trustmesh(
            "k8s", "render", "-f", str(RUN_FILE), "--home", str(home), "--identity", mode,
            "--namespace", "default", "--app-image", "mcp-server=registry.example/mcp:1",
        )  # fmt: skip
        out[mode] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def _by_kind(manifests: list[dict], kind: str) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


MODES = ("builtin", "spire", "cert-manager")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(rendered, mode, version) -> None:
    for manifest in rendered[mode]:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_validation_would_catch_a_broken_manifest(rendered) -> None:
    """The validator is not a rubber stamp: a typo in a native sidecar field is refused."""
    deployment = _by_kind(rendered["spire"], "Deployment")["mcp-server"]
    sidecar = deployment["spec"]["template"]["spec"]["initContainers"][0]
    broken = {**sidecar, "restartPolicyy": "Always"}
    deployment["spec"]["template"]["spec"]["initContainers"] = [broken]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)
    deployment["spec"]["template"]["spec"]["initContainers"] = [sidecar]


@pytest.mark.parametrize("mode", MODES)
def test_each_app_runs_beside_a_native_sidecar_reachable_only_through_it(rendered, mode) -> None:
    deployments = _by_kind(rendered[mode], "Deployment")
    for app_id in APPS:
        pod = deployments[app_id]["spec"]["template"]["spec"]
        (sidecar,) = pod["initContainers"]
        (app,) = pod["containers"]
        assert sidecar["restartPolicy"] == "Always"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = sidecar[probe]["exec"]["command"]
            assert command[:4] == ["trustmesh", "k8s", "probe", "--admin-port"]
            assert command[4] == str(ADMIN_PORT)
        assert sidecar["readinessProbe"]["exec"]["command"][-1] == "/readyz"
        assert "ports" not in app, "the app must not be exposed beyond the pod's loopback"
        assert sidecar["ports"] == [
            {"name": "mtls", "containerPort": INBOUND_PORT, "protocol": "TCP"}
        ]
        assert pod["serviceAccountName"] == app_id
        assert pod["automountServiceAccountToken"] is False
        assert sidecar["securityContext"]["runAsNonRoot"] is True
        assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True
        assert deployments[app_id]["spec"]["template"]["metadata"]["labels"][MESH_LABEL] == "true"
        # The rendered arguments are ones the real sidecar command accepts.
        sidecar_command.make_context("sidecar", list(sidecar["args"][1:]))
        args = sidecar["args"]
        assert args[args.index("--resolve") + 1] == "dns"
        assert args[args.index("--policy-dir") + 1] == "/etc/trustmesh/policy"
    assert (
        _by_kind(rendered[mode], "Deployment")["mcp-server"]["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == "registry.example/mcp:1"
    )


@pytest.mark.parametrize("mode", MODES)
def test_services_service_accounts_and_network_policies(rendered, mode) -> None:
    services = _by_kind(rendered[mode], "Service")
    accounts = _by_kind(rendered[mode], "ServiceAccount")
    policies = _by_kind(rendered[mode], "NetworkPolicy")
    for app_id in APPS:
        service = services[f"{app_id}-dapr"]
        assert service["spec"]["selector"] == {"trustmesh.dev/app-id": app_id}
        assert service["spec"]["ports"] == [
            {"name": "mtls", "port": INBOUND_PORT, "targetPort": "mtls", "protocol": "TCP"}
        ]
        assert accounts[app_id]["automountServiceAccountToken"] is False
        policy = policies[f"{app_id}-mesh-only"]["spec"]
        assert policy["podSelector"] == {"matchLabels": {"trustmesh.dev/app-id": app_id}}
        assert policy["policyTypes"] == ["Ingress"]
        (rule,) = policy["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {MESH_LABEL: "true"}}}]
        assert rule["ports"] == [{"protocol": "TCP", "port": INBOUND_PORT}]


@pytest.mark.parametrize("mode", MODES)
def test_policy_configmap_is_the_homes_current_policy(rendered, home, mode, tmp_path) -> None:
    (configmap,) = [m for m in rendered[mode] if m["metadata"]["name"] == "trustmesh-policy"]
    publish(tmp_path / "cm", configmap["data"])
    from_configmap = PolicyDirStore(tmp_path / "cm").snapshot("mcp-server", "default")
    from_home = MeshStore(home).snapshot("mcp-server", "default")
    assert from_configmap.resources == from_home.resources
    assert from_configmap.binding == from_home.binding
    assert from_configmap.generation == from_home.generation
    assert ("AppIdentityBinding", "runner") in from_configmap.resources


def test_builtin_runs_the_ca_and_gives_each_app_a_join_token(rendered, home) -> None:
    manifests = rendered["builtin"]
    assert "trustmesh-ca" in _by_kind(manifests, "Deployment")
    assert _by_kind(manifests, "Service")["trustmesh-ca"]["spec"]["ports"][0]["port"] == 8443
    secrets = _by_kind(manifests, "Secret")
    assert {"root.key", "issuer.key", "tokens.json"} <= set(secrets["trustmesh-ca"]["stringData"])
    tokens = TokenStore(ca_layout(home))
    import datetime as dt

    for app_id in APPS:
        token = secrets[f"{app_id}-join-token"]["stringData"]["token"]
        identity = tokens.check(token, now=dt.datetime.now(dt.UTC))
        assert str(identity) == f"spiffe://public/ns/default/{app_id}"
        pod = _by_kind(manifests, "Deployment")[app_id]["spec"]["template"]["spec"]
        args = pod["initContainers"][0]["args"]
        assert args[args.index("--ca-url") + 1] == (
            "https://trustmesh-ca.default.svc.cluster.local:8443"
        )


def test_spire_mounts_the_workload_api_through_the_spiffe_csi_driver(rendered) -> None:
    manifests = rendered["spire"]
    assert "trustmesh-ca" not in _by_kind(manifests, "Deployment")
    assert all(name.endswith("-api-tokens") for name in _by_kind(manifests, "Secret"))
    pod = _by_kind(manifests, "Deployment")["mcp-server"]["spec"]["template"]["spec"]
    assert {
        "name": "spiffe-workload-api",
        "csi": {"driver": "csi.spiffe.io", "readOnly": True},
    } in (pod["volumes"])
    sidecar = pod["initContainers"][0]
    assert {"name": "SPIFFE_ENDPOINT_SOCKET",
            "value": "unix:///spiffe-workload-api/spire-agent.sock"} in sidecar["env"]  # fmt: skip
    assert sidecar["args"][sidecar["args"].index("--identity") + 1] == "spire"


def test_cert_manager_mounts_csi_driver_spiffe_files(rendered) -> None:
    manifests = rendered["cert-manager"]
    assert all(name.endswith("-api-tokens") for name in _by_kind(manifests, "Secret"))
    pod = _by_kind(manifests, "Deployment")["mcp-client"]["spec"]["template"]["spec"]
    volume = {"name": "spiffe", "csi": {"driver": "spiffe.csi.cert-manager.io", "readOnly": True}}
    assert volume in pod["volumes"]
    args = pod["initContainers"][0]["args"]
    assert args[args.index("--svid-dir") + 1] == "/var/run/secrets/spiffe.io"


def test_bad_input_is_one_clear_line(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["k8s", "render", "-f", str(tmp_path / "nope.yaml"), "--home", str(tmp_path / "h")]
    )
    assert result.exit_code != 0
    assert "no such run file" in result.output
    result = CliRunner().invoke(
        cli,
        ["k8s", "render", "-f", str(RUN_FILE), "--home", str(tmp_path / "h"),
         "--app-image", "ghost=x:1"],
    )  # fmt: skip
    assert result.exit_code != 0 and "not in the run file: ghost" in result.output


def test_containerfile_builds_the_sidecar_from_the_package() -> None:
    text = (Path(__file__).resolve().parents[2] / "Containerfile").read_text()
    for source in ("pyproject.toml", "identity", "ca", "sidecar"):
        assert (Path(__file__).resolve().parents[2] / source).exists()
        assert f"COPY {source}" in text or f" {source} " in text
    assert "trustmesh[spire]" in text
    assert "USER 65532:65532" in text
    assert 'ENTRYPOINT ["trustmesh"]' in text


def test_probe_command_checks_the_admin_port_from_inside_the_pod(mesh) -> None:
    app = mesh.procs.app()
    sidecar = mesh.sidecar("server", app_port=app.ready["port"])
    port = sidecar.ready["admin"].rpartition(":")[2]
    for path in ("/healthz", "/readyz"):
        result = CliRunner().invoke(cli, ["k8s", "probe", "--admin-port", port, path])
        assert result.exit_code == 0, result.output
    app.stop()  # the app is gone: not ready, but alive
    result = CliRunner().invoke(cli, ["k8s", "probe", "--admin-port", port, "/readyz"])
    assert result.exit_code != 0 and "answered 503" in result.output
    assert (
        CliRunner().invoke(cli, ["k8s", "probe", "--admin-port", port, "/healthz"]).exit_code == 0
    )
    sidecar.stop()
    result = CliRunner().invoke(cli, ["k8s", "probe", "--admin-port", port, "/healthz"])
    assert result.exit_code != 0 and "Connection refused" in result.output


def test_policy_only_prints_just_the_configmap_and_mints_nothing(rendered, home) -> None:
    tokens_before = (ca_layout(home).tokens).read_text()
    text = _trustmesh("k8s", "render", "-f", str(RUN_FILE), "--home", str(home), "--policy-only")
    (configmap,) = [doc for doc in yaml.safe_load_all(text) if doc]
    assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["name"] == "trustmesh-policy"
    assert (ca_layout(home).tokens).read_text() == tokens_before


@pytest.mark.parametrize("namespace", ["Agents", "a.b", "-x", "x" * 60])
def test_namespaces_kubernetes_cannot_name_are_refused(tmp_path, namespace) -> None:
    result = CliRunner().invoke(
        cli, ["k8s", "render", "-f", str(RUN_FILE), "--home", str(tmp_path / "h"),
              "--namespace", namespace],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "cannot name Kubernetes objects" in result.output or "invalid namespace" in result.output
