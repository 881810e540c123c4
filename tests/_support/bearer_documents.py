"""The YAML documents and the issuer site every bearer test through real sidecars builds: a
``middleware.http.bearer`` Component, a Configuration whose ``httpPipeline`` runs it, and an
issuer that publishes OIDC discovery and its JWKS on its own origin."""

from __future__ import annotations

from typing import Any

from tests._support.jose_mint import jwks


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
