"""``trustmesh sidecar``: run one sidecar in the foreground."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import click
import trio

from ca import CAError
from ca.home import resolve_home
from identity import IdentityError

from .errors import SidecarError
from .http.server import ServerLimits
from .logsetup import configure_logging
from .runtime import SidecarOptions, print_ready_line, run_sidecar

KNOWN_ERRORS: tuple[type[BaseException], ...] = (SidecarError, IdentityError, CAError)


def first_known_error(exc: BaseException) -> BaseException | None:
    """trio wraps task failures in exception groups; find the one a user should read."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_known_error(inner)
            if found is not None:
                return found
        return None
    return exc if isinstance(exc, KNOWN_ERRORS) else None


def _read_secret_file(path: str | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} file {path}: {exc.strerror}") from exc


def _limits(items: tuple[str, ...]) -> ServerLimits:
    try:
        return ServerLimits().with_overrides(list(items))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--limit") from None


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
@click.option("--home", help="Mesh state directory (default $TRUSTMESH_HOME or ./.trustmesh).")
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
    "--peers",
    type=click.Path(dir_okay=False),
    help="Static YAML map of app-id to host:port, for hosts that share no mesh directory.",
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
    configure_logging(kw["log_level"])
    home = resolve_home(kw["home"], create=True)
    token = _read_secret_file(kw["token_file"], "token") or kw["token"]
    api_token = _read_secret_file(kw["api_token_file"], "API token") or os.environ.get(
        "DAPR_API_TOKEN"
    )
    opts = SidecarOptions(
        app_id=kw["app_id"],
        home=home,
        namespace=kw["namespace"],
        trust_domain=kw["trust_domain"],
        app_port=kw["app_port"],
        http_port=kw["http_port"],
        inbound_port=kw["inbound_port"],
        admin_port=kw["admin_port"],
        inbound_host=kw["inbound_host"],
        ca_url=kw["ca_url"],
        token=token,
        ca_bundle=Path(kw["ca_bundle"]) if kw["ca_bundle"] else None,
        svid_dir=Path(kw["svid_dir"]) if kw["svid_dir"] else None,
        peers=Path(kw["peers"]) if kw["peers"] else None,
        api_token=api_token.encode() if api_token else None,
        config=kw["config"],
        limits=_limits(kw["limits"]),
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_sidecar, opts)
            # Everything loaded so far lives as long as the process: keep the collector off it.
            gc.freeze()
            print_ready_line(running)

    try:
        trio.run(main)
    except BaseException as exc:  # translated below, or re-raised as it was
        known = first_known_error(exc)
        if known is None:
            raise
        raise click.ClickException(str(known)) from None
