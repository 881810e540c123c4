"""Gathering what ``trustmesh k8s render`` writes: the run file, the home's policy, the CA.

The policy is the home's *current* one, after the run file's own documents are applied to it
exactly as ``trustmesh run -f`` applies them (configurations, resources, MCP server
registrations), so a mesh tried on one host renders with the policy it was tried with. App ID
bindings are rendered into the target namespace: the home is one namespace, the render picks it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from ca import CAError, parse_duration
from ca.home import ca_layout, resolve_home
from ca.tokens import TokenStore
from identity import AppIdentity, IdentityError, validate_namespace

from ..errors import SidecarError
from ..runner import RunnerError, load_run_file
from ..runner.prepare import apply_run_file, ensure_ca
from ..state.policy_dir import APP_ID_KIND, GENERATION_KEY
from ..state.store import KIND_DIRS, MeshStore
from .render import AppUnit, BuiltinCA, RenderInput


class RenderError(SidecarError):
    code = "ERR_K8S_RENDER"
    http_status = 400


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SERVICE_SUFFIX = "-dapr"


def check_kubernetes_name(name: str, what: str) -> str:
    """Namespaces and Service names are DNS labels (RFC 1123): App IDs become both, so an App
    ID Kubernetes cannot name is refused here rather than by the API server at apply time."""
    if not _DNS_LABEL.fullmatch(name) or len(name) + len(_SERVICE_SUFFIX) > 63:
        raise RenderError(
            f"{what} {name!r} cannot name Kubernetes objects: use lower-case letters, digits and "
            f"'-' (at most {63 - len(_SERVICE_SUFFIX)} characters, starting and ending "
            "alphanumeric)"
        )
    return name


def _dump(documents: list[dict]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)


def policy_files(store: MeshStore, namespace: str) -> dict[str, str]:
    """The ``trustmesh-policy`` ConfigMap's data: one key per kind, plus the generation."""
    snapshot = store.snapshot("", namespace)
    files: dict[str, str] = {}
    for kind, directory in KIND_DIRS.items():
        documents = []
        for (doc_kind, name), document in sorted(snapshot.resources.items()):
            if doc_kind != kind:
                continue
            if isinstance(document, Exception):
                raise RenderError(f"cannot render {kind} {name!r}: {document}")
            documents.append(document)
        if documents:
            files[f"{directory}.yaml"] = _dump(documents)
    bindings = []
    for binding in store.bindings():
        spec: dict = {}
        if binding.configuration:
            spec["configuration"] = binding.configuration
        if binding.mcp_server is not None:
            spec["mcpServer"] = dict(binding.mcp_server)
        bindings.append(
            {
                "apiVersion": "trustmesh.dev/v1alpha1",
                "kind": APP_ID_KIND,
                "metadata": {"name": binding.app_id, "namespace": namespace},
                "spec": spec,
            }
        )
    if bindings:
        files["appids.yaml"] = _dump(bindings)
    files[GENERATION_KEY] = f"{snapshot.generation}\n"
    return files


def _builtin_ca(
    home: Path, apps: list[AppUnit], namespace: str, ttl: dt.timedelta, now: dt.datetime
) -> tuple[BuiltinCA, str]:
    trust_domain, _ = ensure_ca(home)
    layout = ca_layout(home)
    store = TokenStore(layout)
    tokens = {}
    try:
        for app in apps:
            identity = AppIdentity(trust_domain, namespace, app.app_id)
            tokens[app.app_id] = store.issue(identity, now=now, ttl=ttl)
        files = {path.name: path.read_text() for path in (*layout.all_files, layout.tokens)}
    except (CAError, IdentityError, OSError) as exc:
        raise RenderError(f"cannot prepare the CA for Kubernetes: {exc}") from exc
    ca = BuiltinCA(files=files, bundle_pem=files["bundle.pem"], join_tokens=tokens)
    return ca, trust_domain


def build_render_input(
    *,
    run_file: str,
    home: str | None,
    namespace: str,
    identity: str,
    trust_domain: str | None,
    image: str,
    app_images: dict[str, str],
    cluster_domain: str,
    token_ttl: str,
    new_token: Callable[[], str],
    now: dt.datetime,
    policy_only: bool = False,
) -> RenderInput:
    try:
        validate_namespace(namespace)
        check_kubernetes_name(namespace, "namespace")
        ttl = parse_duration(token_ttl)
    except (IdentityError, CAError) as exc:
        raise RenderError(str(exc)) from exc
    try:
        run = load_run_file(run_file)
    except RunnerError as exc:
        raise RenderError(str(exc)) from exc
    unknown = set(app_images) - {app.app_id for app in run.apps}
    if unknown:
        raise RenderError(
            f"--app-image names apps not in the run file: {', '.join(sorted(unknown))}"
        )
    apps = []
    for app in run.apps:
        check_kubernetes_name(app.app_id, "App ID")
        if app.app_port == 0:
            raise RenderError(
                f"app {app.app_id!r} has appPort 0 (pick one at run time): Kubernetes needs a "
                "fixed port; set appPort in the run file"
            )
        apps.append(
            AppUnit(
                app_id=app.app_id,
                image=app_images.get(app.app_id, f"{app.app_id}:latest"),
                command=tuple(app.command),
                app_port=app.app_port,
                env=dict(app.env),
                log_level=app.log_level,
            )
        )
    home_path = resolve_home(home, create=True)
    try:
        apply_run_file(home_path, run)
    except RunnerError as exc:
        raise RenderError(str(exc)) from exc
    ca = None
    if identity == "builtin" and not policy_only:  # a policy update mints no tokens
        ca, ca_domain = _builtin_ca(home_path, apps, namespace, ttl, now)
        if trust_domain not in (None, ca_domain):
            raise RenderError(
                f"--trust-domain {trust_domain!r} differs from the home CA's {ca_domain!r}"
            )
        trust_domain = ca_domain
    return RenderInput(
        apps=apps,
        namespace=namespace,
        identity=identity,
        trust_domain=trust_domain or "cluster.local",
        image=image,
        policy_files=policy_files(MeshStore(home_path), namespace),
        api_tokens={app.app_id: (new_token(), new_token()) for app in apps},
        ca=ca,
        cluster_domain=cluster_domain,
    )
