"""``trustmesh sidecar``: run one sidecar in the foreground.

The flags are read here, with click; the sidecar then runs in a process that never loaded click
or this module (:mod:`sidecar.serve` explains the hand-over).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from .cli_home import home_option, resolve_cli_home
from .serve import BadLimit, first_known_error, hand_over, serve, started_as_the_cli


def _read_secret_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} file {path}: {exc.strerror}") from exc


@click.command("sidecar")
@click.option("--app-id", required=True, help="This app's ID (case-sensitive).")
@click.option(
    "--app-port",
    type=click.IntRange(1, 65535),
    help="The app's port on 127.0.0.1; omit for an outbound-only app.",
)
@click.option("--namespace", default="default", show_default=True)
@click.option("--trust-domain", default="public", show_default=True)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=3500,
    show_default=True,
    help="Outbound port the app calls (127.0.0.1 only); 0 picks a free one.",
)
@click.option(
    "--inbound-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="mTLS port other sidecars call; 0 picks a free one.",
)
@click.option(
    "--inbound-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the mTLS listener binds.",
)
@click.option("--admin-port", type=click.IntRange(0, 65535), default=0, show_default=True)
@home_option
@click.option("--ca-url", help="The bundled CA's URL (https://127.0.0.1:PORT).")
@click.option(
    "--token",
    envvar="TRUSTMESH_JOIN_TOKEN",
    help="Join token from 'trustmesh ca token' "
    "(or $TRUSTMESH_JOIN_TOKEN, which keeps it out of the process list).",
)
@click.option("--token-file", type=click.Path(dir_okay=False), help="File holding the join token.")
@click.option(
    "--ca-bundle",
    type=click.Path(dir_okay=False),
    help="Trust bundle for the CA (default <home>/ca/bundle.pem).",
)
@click.option(
    "--svid-dir",
    type=click.Path(file_okay=False),
    help="Read svid.pem/svid.key/"
    "bundle.pem (or tls.crt/tls.key/ca.crt) from here and reload on change.",
)
@click.option(
    "--identity",
    type=click.Choice(["auto", "builtin", "files", "spire"]),
    default="auto",
    show_default=True,
    help="Where the SVID comes from: the bundled CA (--ca-url), files (--svid-dir), or the "
    "SPIFFE Workload API (spire; socket from $SPIFFE_ENDPOINT_SOCKET). auto: by the flags given.",
)
@click.option(
    "--spiffe-endpoint",
    help="Workload API socket for --identity spire (default $SPIFFE_ENDPOINT_SOCKET).",
)
@click.option(
    "--peers",
    type=click.Path(dir_okay=False),
    help="Static YAML map of app-id to host:port, for hosts that share no mesh directory.",
)
@click.option(
    "--resolve",
    type=click.Choice(["registry", "peers", "dns"]),
    help="How App IDs become addresses: the home's registry (default), the --peers file, or "
    "DNS names from --dns-template.",
)
@click.option(
    "--dns-template",
    default="{app_id}-dapr.{namespace}.svc.cluster.local:{port}",
    show_default=True,
    help="For --resolve dns; {port} is --inbound-port (the same on every sidecar).",
)
@click.option(
    "--policy-dir",
    type=click.Path(file_okay=False),
    help="Read configurations, components, MCP policies and App ID bindings from this "
    "directory (a mounted ConfigMap) instead of the home; reloaded when kubelet swaps it.",
)
@click.option(
    "--api-token-file",
    type=click.Path(dir_okay=False),
    help="Require this token in "
    "'dapr-api-token' on the outbound port (default: $DAPR_API_TOKEN if set).",
)
@click.option(
    "--config",
    help="Configuration to enforce: a name in the mesh store or a YAML file "
    "(default: the one attached with 'trustmesh appid update').",
)
@click.option(
    "--audit-log",
    metavar="FILE|stdout|none",
    help="Where decision records go (default <home>/audit/<namespace>.<app-id>.jsonl); "
    "'stdout' writes them as JSON lines, 'none' keeps none.",
)
@click.option(
    "--audit-fail-closed",
    is_flag=True,
    help="Deny requests (503) while the audit log cannot keep up or cannot write.",
)
@click.option(
    "--audit-checkpoint-every",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="Records between signed checkpoints.",
)
@click.option(
    "--audit-checkpoint-seconds",
    type=click.FloatRange(0.01),
    default=60.0,
    show_default=True,
    help="Longest time between signed checkpoints while records arrive.",
)
@click.option(
    "--audit-max-bytes",
    type=click.IntRange(1024),
    default=64 * 1024 * 1024,
    show_default=True,
    help="Rotate the audit file at this size (the chain continues in the next file).",
)
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a listener limit, e.g. max_handshakes=64 or body_timeout=30 (repeatable).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def sidecar_command(**kw) -> None:
    """Run a sidecar for one app: outbound on 127.0.0.1, inbound over mTLS."""
    home = resolve_cli_home(kw["home"], create=True)
    token = _read_secret_file(kw["token_file"], "token") or kw["token"]
    api_token = _read_secret_file(kw["api_token_file"], "API token") or os.environ.get(
        "DAPR_API_TOKEN"
    )
    # Plain values only: the serving process builds the options from them (sidecar.serve), so
    # this process need not import the serving path just to pass them on.
    spec = {
        "app_id": kw["app_id"],
        "home": home,
        "namespace": kw["namespace"],
        "trust_domain": kw["trust_domain"],
        "app_port": kw["app_port"],
        "http_port": kw["http_port"],
        "inbound_port": kw["inbound_port"],
        "admin_port": kw["admin_port"],
        "inbound_host": kw["inbound_host"],
        "ca_url": kw["ca_url"],
        "token": token,
        "ca_bundle": Path(kw["ca_bundle"]) if kw["ca_bundle"] else None,
        "svid_dir": Path(kw["svid_dir"]) if kw["svid_dir"] else None,
        "identity": kw["identity"],
        "spiffe_endpoint": kw["spiffe_endpoint"],
        "peers": Path(kw["peers"]) if kw["peers"] else None,
        "resolve": kw["resolve"],
        "dns_template": kw["dns_template"],
        "policy_dir": Path(kw["policy_dir"]) if kw["policy_dir"] else None,
        "api_token": api_token.encode() if api_token else None,
        "app_api_token": os.environ.get("APP_API_TOKEN", "").encode() or None,
        "config": kw["config"],
        "audit": {
            "where": kw["audit_log"],
            "fail_closed": kw["audit_fail_closed"],
            "checkpoint_every": kw["audit_checkpoint_every"],
            "checkpoint_seconds": kw["audit_checkpoint_seconds"],
            "max_file_bytes": kw["audit_max_bytes"],
        },
        "limits": list(kw["limits"]),
    }
    if started_as_the_cli():
        hand_over(spec, kw["log_level"])  # becomes the lean serving process (sidecar.serve)
    from .logsetup import configure_logging  # serving here: a test's CliRunner, or no exec

    configure_logging(kw["log_level"])
    try:
        serve(spec)
    except BadLimit as exc:
        raise exc.as_click() from None
    except BaseException as exc:  # translated below, or re-raised as it was
        known = first_known_error(exc)
        if known is None:
            raise
        raise click.ClickException(str(known)) from None
