"""Kubernetes manifests for a run file: pure, from plain inputs to a list of manifest dicts.

Kubernetes does the scheduling, Services and DNS name the sidecars, a ConfigMap carries policy
and SPIRE, cert-manager or the bundled CA issue identities; this module only writes that down.
Per app:

* a ``ServiceAccount`` named after the App ID (the default SPIFFE ID → App ID mapping, so SPIRE's
  and csi-driver-spiffe's ``ns/<ns>/sa/<app-id>`` identities need no binding), without an
  automounted API token: neither container talks to the Kubernetes API;
* a ``Deployment`` whose pod runs the sidecar as a *native sidecar* (an init container with
  ``restartPolicy: Always``: started before the app and stopped after it) and the app, which is
  reached only through the pod's loopback: it declares no port, and its sidecar forwards to
  127.0.0.1. Probes run *inside* the pod against the admin port (``trustmesh k8s probe``), since
  the admin port listens on 127.0.0.1 only; the startup probe is what makes kubelet hold the app
  until the sidecar is up;
* a ``<app-id>-dapr`` Service for the sidecar's mTLS port (Dapr's naming), for apps that serve;
* a ``NetworkPolicy`` admitting only mesh pods, and only on the mTLS port (defence in depth: the
  mTLS identity check is what decides);
* a ``Secret`` with the app's API tokens (``DAPR_API_TOKEN`` for app → sidecar, ``APP_API_TOKEN``
  for sidecar → app), as the runner makes them on one host.

For the mesh: the ``trustmesh-policy`` ConfigMap (configurations, components, MCP policies,
identity bindings and App ID bindings from the home, read with ``--policy-dir``), and with
``builtin`` identity the CA as a Deployment + Service with its keys in a Secret and one join token
Secret per app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IDENTITY_MODES = ("builtin", "spire", "cert-manager")
HTTP_PORT = 3500  # Dapr's app-facing port
INBOUND_PORT = 50002  # Dapr's sidecar-to-sidecar port; here the mTLS listener
ADMIN_PORT = 9090
CA_PORT = 8443
RUNTIME_UID = 65532  # the Containerfile's non-root user

POLICY_CONFIGMAP = "trustmesh-policy"
POLICY_MOUNT = "/etc/trustmesh/policy"
HOME_MOUNT = "/var/lib/trustmesh"  # an emptyDir, owned by root: the home is made inside it,
HOME_DIR = f"{HOME_MOUNT}/home"  # so the non-root process owns it and may make it 0700
CA_NAME = "trustmesh-ca"
CA_BUNDLE_CONFIGMAP = "trustmesh-ca-bundle"
CA_BUNDLE_MOUNT = "/etc/trustmesh/ca-bundle"
JOIN_TOKEN_MOUNT = "/var/run/trustmesh/join"  # noqa: S105 - a mount path, not a secret
SPIFFE_CSI_DRIVER = "csi.spiffe.io"
SPIFFE_SOCKET_MOUNT = "/spiffe-workload-api"
CERT_MANAGER_CSI_DRIVER = "spiffe.csi.cert-manager.io"
CERT_MANAGER_MOUNT = "/var/run/secrets/spiffe.io"

PART_OF = {"app.kubernetes.io/part-of": "trustmesh"}
APP_LABEL = "trustmesh.dev/app-id"
MESH_LABEL = "trustmesh.dev/mesh"  # on every pod with a sidecar: who may reach an mTLS port


@dataclass(frozen=True)
class AppUnit:
    """What the renderer needs of one run-file app."""

    app_id: str
    image: str
    command: tuple[str, ...] = ()
    app_port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    log_level: str = "info"


@dataclass(frozen=True)
class BuiltinCA:
    """The bundled CA's files (Secret data) and one join token per App ID."""

    files: Mapping[str, str]
    bundle_pem: str
    join_tokens: Mapping[str, str]


@dataclass(frozen=True)
class RenderInput:
    apps: Sequence[AppUnit]
    namespace: str
    identity: str
    trust_domain: str
    image: str
    policy_files: Mapping[str, str]
    api_tokens: Mapping[str, tuple[str, str]]  # App ID → (DAPR_API_TOKEN, APP_API_TOKEN)
    ca: BuiltinCA | None = None
    cluster_domain: str = "cluster.local"


def _meta(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {**PART_OF, **labels}}


def _restricted() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    command = ["trustmesh", "k8s", "probe", "--admin-port", str(ADMIN_PORT), path]
    return {
        "exec": {"command": command},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def dns_template(cluster_domain: str) -> str:
    return "{app_id}-dapr.{namespace}.svc." + cluster_domain + ":{port}"


def sidecar_args(app: AppUnit, spec: RenderInput) -> list[str]:
    args = [
        "sidecar",
        "--app-id", app.app_id,
        "--namespace", spec.namespace,
        "--trust-domain", spec.trust_domain,
        "--http-port", str(HTTP_PORT),
        "--inbound-port", str(INBOUND_PORT),
        "--inbound-host", "0.0.0.0",  # noqa: S104 - the pod's interfaces; NetworkPolicy + mTLS
        "--admin-port", str(ADMIN_PORT),
        "--home", HOME_DIR,
        "--policy-dir", POLICY_MOUNT,
        "--resolve", "dns",
        "--dns-template", dns_template(spec.cluster_domain),
        "--log-level", app.log_level,
    ]  # fmt: skip
    if app.app_port is not None:
        args += ["--app-port", str(app.app_port)]
    if spec.identity == "builtin":
        ca_url = f"https://{CA_NAME}.{spec.namespace}.svc.{spec.cluster_domain}:{CA_PORT}"
        args += [
            "--identity", "builtin",
            "--ca-url", ca_url,
            "--token-file", f"{JOIN_TOKEN_MOUNT}/token",
            "--ca-bundle", f"{CA_BUNDLE_MOUNT}/bundle.pem",
        ]  # fmt: skip
    elif spec.identity == "spire":
        args += ["--identity", "spire"]
    else:
        args += ["--identity", "files", "--svid-dir", CERT_MANAGER_MOUNT]
    return args


def _identity_volumes(app: AppUnit, spec: RenderInput) -> tuple[list[dict], list[dict]]:
    """(volumes, sidecar volume mounts) that carry the sidecar's identity."""
    if spec.identity == "builtin":
        return (
            [
                {"name": "join-token", "secret": {"secretName": f"{app.app_id}-join-token"}},
                {"name": "ca-bundle", "configMap": {"name": CA_BUNDLE_CONFIGMAP}},
            ],
            [
                {"name": "join-token", "mountPath": JOIN_TOKEN_MOUNT, "readOnly": True},
                {"name": "ca-bundle", "mountPath": CA_BUNDLE_MOUNT, "readOnly": True},
            ],
        )
    if spec.identity == "spire":
        return (
            [
                {
                    "name": "spiffe-workload-api",
                    "csi": {"driver": SPIFFE_CSI_DRIVER, "readOnly": True},
                }
            ],
            [{"name": "spiffe-workload-api", "mountPath": SPIFFE_SOCKET_MOUNT, "readOnly": True}],
        )
    return (
        [{"name": "spiffe", "csi": {"driver": CERT_MANAGER_CSI_DRIVER, "readOnly": True}}],
        [{"name": "spiffe", "mountPath": CERT_MANAGER_MOUNT, "readOnly": True}],
    )


def _token_env(app: AppUnit) -> list[dict[str, Any]]:
    secret = f"{app.app_id}-api-tokens"
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in ("DAPR_API_TOKEN", "APP_API_TOKEN")
    ]


def _sidecar_container(app: AppUnit, spec: RenderInput, mounts: list[dict]) -> dict[str, Any]:
    env = _token_env(app)
    if spec.identity == "spire":
        env.append(
            {
                "name": "SPIFFE_ENDPOINT_SOCKET",
                "value": f"unix://{SPIFFE_SOCKET_MOUNT}/spire-agent.sock",
            }
        )
    container: dict[str, Any] = {
        "name": "trustmesh-sidecar",
        "image": spec.image,
        "restartPolicy": "Always",  # a native sidecar (Kubernetes >= 1.29)
        "args": sidecar_args(app, spec),
        "env": env,
        "startupProbe": _probe("/healthz", 1, 60),
        "livenessProbe": _probe("/healthz", 10, 3),
        "readinessProbe": _probe("/readyz", 5, 3),
        "securityContext": _restricted(),
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        },
        "volumeMounts": [
            {"name": "policy", "mountPath": POLICY_MOUNT, "readOnly": True},
            {"name": "home", "mountPath": HOME_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir
            *mounts,
        ],
    }
    if app.app_port is not None:
        container["ports"] = [{"name": "mtls", "containerPort": INBOUND_PORT, "protocol": "TCP"}]
    return container


def _app_container(app: AppUnit) -> dict[str, Any]:
    env = [{"name": k, "value": v} for k, v in sorted(app.env.items())]
    env += [
        {"name": "DAPR_HTTP_PORT", "value": str(HTTP_PORT)},
        {"name": "TRUSTMESH_HTTP_PORT", "value": str(HTTP_PORT)},
        *_token_env(app),
    ]
    if app.app_port is not None:
        env.append({"name": "APP_PORT", "value": str(app.app_port)})
    container: dict[str, Any] = {
        "name": "app",
        "image": app.image,
        "env": env,
        # No ports: the app listens on the pod's 127.0.0.1 and only its sidecar reaches it.
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    if app.command:
        container["command"] = list(app.command)
    return container


def deployment(app: AppUnit, spec: RenderInput) -> dict[str, Any]:
    volumes, mounts = _identity_volumes(app, spec)
    labels = {APP_LABEL: app.app_id, MESH_LABEL: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(app.app_id, spec.namespace, **{APP_LABEL: app.app_id}),
        "spec": {
            # builtin: one join token per App ID enrols one pod; SPIRE/cert-manager scale freely.
            "replicas": 1,
            "selector": {"matchLabels": {APP_LABEL: app.app_id}},
            "template": {
                "metadata": {"labels": {**PART_OF, **labels}},
                "spec": {
                    "serviceAccountName": app.app_id,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": RUNTIME_UID},
                    "initContainers": [_sidecar_container(app, spec, mounts)],
                    "containers": [_app_container(app)],
                    "volumes": [
                        {"name": "policy", "configMap": {"name": POLICY_CONFIGMAP}},
                        {"name": "home", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                        *volumes,
                    ],
                },
            },
        },
    }


def dapr_service(app: AppUnit, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(f"{app.app_id}-dapr", namespace, **{APP_LABEL: app.app_id}),
        "spec": {
            "selector": {APP_LABEL: app.app_id},
            "ports": [
                {"name": "mtls", "port": INBOUND_PORT, "targetPort": "mtls", "protocol": "TCP"}
            ],
        },
    }


def mesh_only_network_policy(name: str, namespace: str, selector: dict, port: int | None) -> dict:
    """Ingress to pods matching ``selector`` only from mesh pods, only on ``port`` (or none)."""
    ingress = []
    if port is not None:
        ingress.append(
            {
                "from": [{"podSelector": {"matchLabels": {MESH_LABEL: "true"}}}],
                "ports": [{"protocol": "TCP", "port": port}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, namespace),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def service_account(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(name, namespace),
        "automountServiceAccountToken": False,
    }


def _secret(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, namespace),
        "type": "Opaque",
        "stringData": dict(data),
    }


def _configmap(name: str, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name, namespace),
        "data": dict(data),
    }


def ca_manifests(spec: RenderInput) -> list[dict[str, Any]]:
    """The bundled CA as a Deployment: its files come from a Secret, copied into an emptyDir
    because the CA rewrites ``tokens.json`` as join tokens are used."""
    assert spec.ca is not None
    ns = spec.namespace
    labels = {APP_LABEL: CA_NAME}
    copy = (
        f"set -e; mkdir -p {HOME_DIR}/ca; cp /etc/trustmesh/ca/* {HOME_DIR}/ca/; "
        f"chmod 700 {HOME_DIR} {HOME_DIR}/ca; chmod 600 {HOME_DIR}/ca/*"
    )
    pod = {
        "serviceAccountName": CA_NAME,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"fsGroup": RUNTIME_UID},
        "initContainers": [
            {
                "name": "load-ca",
                "image": spec.image,
                "command": ["sh", "-c", copy],
                "securityContext": _restricted(),
                "volumeMounts": [
                    {"name": "ca-secret", "mountPath": "/etc/trustmesh/ca", "readOnly": True},
                    {"name": "home", "mountPath": HOME_MOUNT},
                ],
            }
        ],
        "containers": [
            {
                "name": "ca",
                "image": spec.image,
                "args": ["ca", "serve", "--home", HOME_DIR, "--listen", f"0.0.0.0:{CA_PORT}"],
                "ports": [{"name": "https", "containerPort": CA_PORT, "protocol": "TCP"}],
                "readinessProbe": {"tcpSocket": {"port": "https"}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": "https"}, "periodSeconds": 10},
                "securityContext": _restricted(),
                "volumeMounts": [{"name": "home", "mountPath": HOME_MOUNT}],
            }
        ],
        "volumes": [
            {"name": "ca-secret", "secret": {"secretName": CA_NAME, "defaultMode": 0o440}},
            {"name": "home", "emptyDir": {"medium": "Memory"}},
        ],
    }
    return [
        service_account(CA_NAME, ns),
        _secret(CA_NAME, ns, spec.ca.files),
        _configmap(CA_BUNDLE_CONFIGMAP, ns, {"bundle.pem": spec.ca.bundle_pem}),
        *(
            _secret(f"{app_id}-join-token", ns, {"token": token})
            for app_id, token in sorted(spec.ca.join_tokens.items())
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(CA_NAME, ns, **labels),
            "spec": {
                "selector": labels,
                "ports": [
                    {"name": "https", "port": CA_PORT, "targetPort": "https", "protocol": "TCP"}
                ],
            },
        },
        mesh_only_network_policy(CA_NAME, ns, labels, CA_PORT),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(CA_NAME, ns, **labels),
            "spec": {
                "replicas": 1,  # one writer of tokens.json
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": {**PART_OF, **labels}}, "spec": pod},
            },
        },
    ]


def policy_manifests(spec: RenderInput) -> list[dict[str, Any]]:
    """Only the policy ConfigMap: a policy update touches nothing else."""
    return [_configmap(POLICY_CONFIGMAP, spec.namespace, spec.policy_files)]


def render(spec: RenderInput) -> list[dict[str, Any]]:
    """Every manifest, in an order ``kubectl apply`` is happy with (what others refer to first)."""
    if spec.identity not in IDENTITY_MODES:
        raise ValueError(f"identity must be one of {', '.join(IDENTITY_MODES)}")
    ns = spec.namespace
    out: list[dict[str, Any]] = []
    if spec.identity == "builtin":
        out += ca_manifests(spec)
    out += policy_manifests(spec)
    for app in spec.apps:
        dapr_token, app_token = spec.api_tokens[app.app_id]
        out.append(service_account(app.app_id, ns))
        out.append(
            _secret(
                f"{app.app_id}-api-tokens",
                ns,
                {"DAPR_API_TOKEN": dapr_token, "APP_API_TOKEN": app_token},
            )
        )
        if app.app_port is not None:
            out.append(dapr_service(app, ns))
        out.append(
            mesh_only_network_policy(
                f"{app.app_id}-mesh-only",
                ns,
                {APP_LABEL: app.app_id},
                INBOUND_PORT if app.app_port is not None else None,
            )
        )
        out.append(deployment(app, spec))
    return out
