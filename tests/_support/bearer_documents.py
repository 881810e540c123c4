"""The YAML documents and the issuer site every bearer test through real sidecars builds: a
``middleware.http.bearer`` Component, a Configuration whose ``httpPipeline`` runs it, and an
issuer that publishes OIDC discovery and its JWKS on its own origin."""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from typing import Any

import yaml

from tests._support.jose_mint import jwks, rsa_key
from tests._support.mcp_mesh import McpMesh
from tests._support.switchable_issuer import IssuerSite, serve_issuer
from tests.integration.conftest import Mesh


def bearer_component(name: str, issuer: str, audience: str, **extra: str) -> dict[str, Any]:
    """A bearer Component for ``issuer``/``audience``; ``extra`` are more metadata entries
    (``leeway``, ``jwksURL``, ``requiredTokenType``…), in their YAML spelling."""
    metadata = [{"name": "issuer", "value": issuer}, {"name": "audience", "value": audience}]
    metadata += [{"name": k, "value": v} for k, v in extra.items()]
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {"type": "middleware.http.bearer", "version": "v1", "metadata": metadata},
    }


def bearer_configuration(name: str, component: str, **spec: Any) -> dict[str, Any]:
    """A Configuration running ``component``; ``spec`` adds fields (``accessControl``…)."""
    pipeline = {"handlers": [{"name": component, "type": "middleware.http.bearer"}]}
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": name},
        "spec": {"httpPipeline": pipeline, **spec},
    }


def publish_issuer(site, issuer: str, *keys, **jwks_page: Any) -> None:
    """``site`` (served at ``issuer``) answers OIDC discovery naming a ``jwks_uri`` on its own
    origin, and that JWKS with ``keys``; ``jwks_page`` as ``Site.put`` takes it."""
    site.put(
        "/.well-known/openid-configuration",
        {"issuer": issuer, "jwks_uri": f"{issuer}/jwks.json"},
    )
    site.put("/jwks.json", jwks(*keys), **jwks_page)


@contextmanager
def bearer_mesh(tmp_path, mesh_ca, audience: str, documents, app_config: str):
    """A mesh whose ``server`` (the echo app behind its sidecar) runs the Configuration
    ``app_config``, with a ``client`` sidecar and an issuer serving one RSA key: yields the
    world dict the bearer stream tests share (``key``, ``issuer``, ``app``, ``client``,
    ``server``, ``mesh``, ``home``). ``documents(issuer)`` are the resources applied first."""
    mcp = McpMesh(Mesh(tmp_path, mesh_ca))
    key = rsa_key("k1")
    site = IssuerSite()
    with ExitStack() as stack:
        issuer = stack.enter_context(serve_issuer(site))
        stack.callback(lambda: mcp.procs.stop_all())
        publish_issuer(site, issuer, key)
        path = tmp_path / "documents.yaml"
        path.write_text(yaml.safe_dump_all(documents(issuer), sort_keys=False))
        mcp.tm("apply", "-f", str(path))
        mcp.tm("appid", "update", "server", "--app-config", app_config)
        app = mcp.procs.app("server-app")
        server = mcp.sidecar("server", app_port=app.ready["port"])
        client = mcp.sidecar("client")
        yield {"key": key, "issuer": issuer, "app": app, "client": client, "server": server,
               "mesh": mcp, "home": mcp.home}  # fmt: skip
