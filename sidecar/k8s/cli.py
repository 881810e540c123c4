"""``trustmesh k8s``: render manifests for a run file, and the in-pod probe they use."""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import urllib.error
import urllib.request

import click
import yaml

from ..cli_home import home_option
from ..errors import SidecarError

RENDER_HELP = """Print Kubernetes manifests for the apps of RUNFILE.

Per app: a Deployment (the app and its sidecar as a native sidecar), a <app-id>-dapr Service,
a ServiceAccount, a NetworkPolicy and its API tokens; for the mesh: the trustmesh-policy
ConfigMap with the home's current policy. --identity builtin adds the CA (Deployment, Service,
its keys in a Secret) and one join token Secret per app: the output then holds the CA's private
keys — pipe it to kubectl, do not commit it.
"""


@click.group("k8s")
def k8s_group() -> None:
    """Run the mesh on Kubernetes: render manifests."""


@k8s_group.command("render", help=RENDER_HELP)
@click.option("-f", "--file", "run_file", required=True, help="The run file (dapr run -f form).")
@click.option("--namespace", default="default", show_default=True)
@click.option(
    "--identity",
    type=click.Choice(["builtin", "spire", "cert-manager"]),
    default="builtin",
    show_default=True,
    help="Who issues SVIDs: the bundled CA, SPIRE (SPIFFE CSI driver), or cert-manager "
    "(csi-driver-spiffe).",
)
@click.option("--trust-domain", help="Default: the home CA's (builtin), else cluster.local.")
@click.option("--image", default="trustmesh:0.1.0", show_default=True, help="Sidecar image.")
@click.option(
    "--app-image",
    multiple=True,
    metavar="APP=IMAGE",
    help="The image of an app (repeatable; default <app-id>:latest).",
)
@click.option("--cluster-domain", default="cluster.local", show_default=True)
@click.option(
    "--token-ttl",
    default="24h",
    show_default=True,
    help="builtin: how long the join tokens stay usable (each enrols one pod once).",
)
@click.option(
    "--policy-only",
    is_flag=True,
    help="Print only the trustmesh-policy ConfigMap: what to kubectl apply after a policy change.",
)
@home_option
def render_command(**kw) -> None:
    from .render import policy_manifests, render
    from .source import RenderError, build_render_input

    try:
        spec = build_render_input(
            run_file=kw["run_file"],
            home=kw["home"],
            namespace=kw["namespace"],
            identity=kw["identity"],
            trust_domain=kw["trust_domain"],
            image=kw["image"],
            app_images=_pairs(kw["app_image"]),
            cluster_domain=kw["cluster_domain"],
            token_ttl=kw["token_ttl"],
            new_token=lambda: secrets.token_urlsafe(32),
            now=dt.datetime.now(dt.UTC),
            policy_only=kw["policy_only"],
        )
        manifests = policy_manifests(spec) if kw["policy_only"] else render(spec)
    except (RenderError, SidecarError) as exc:
        raise click.ClickException(str(exc)) from None
    sys.stdout.write(dump_manifests(manifests))


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (policy YAML, PEM) as literal blocks, so the output reads as written."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def dump_manifests(manifests: list[dict]) -> str:
    return yaml.dump_all(manifests, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False)


def _pairs(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        app_id, sep, image = value.partition("=")
        if not sep or not app_id or not image:
            raise click.BadParameter(f"expected APP=IMAGE, got {value!r}", param_hint="--app-image")
        out[app_id] = image
    return out


@k8s_group.command("probe")
@click.option("--admin-port", type=click.IntRange(1, 65535), required=True)
@click.argument("path", type=click.Choice(["/healthz", "/readyz"]))
def probe_command(admin_port: int, path: str) -> None:
    """Exit 0 if the sidecar's admin endpoint PATH answers 2xx (for exec probes in the pod)."""
    url = f"http://127.0.0.1:{admin_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        raise click.ClickException(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if not 200 <= status < 300:
        raise click.ClickException(f"{url} answered {status}")
