"""``trustmesh ca …``: init, status, rotate, issue, token, serve, bundle.

Commands are thin: resolve the state directory, call :mod:`ca.store` / :mod:`ca.tokens` /
:mod:`ca.server`, print. Every failure a user can cause leaves here as a
:class:`click.ClickException` with one sentence (``sidecar.cli.main`` prints it as one line);
package errors are translated in one place, :func:`_cli_errors`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Iterator

import click

from identity import (
    DEFAULT_NAMESPACE,
    DEFAULT_TRUST_DOMAIN,
    AppIdentity,
    IdentityError,
    save_svid_dir,
)

from . import rotation
from ._authority import (
    DEFAULT_CA_TTL,
    DEFAULT_LEAF_TTL,
    CertificateAuthority,
    check_workload_identity,
    root_trust_domain,
)
from ._duration import format_duration, parse_duration
from ._errors import CAError
from .home import ca_layout
from .store import load_bundle, load_ca, save_ca
from .tokens import DEFAULT_TOKEN_TTL, TokenStore

MIN_CA_TTL = dt.timedelta(days=1)  # a leaf lives 24 h by default; a shorter CA cuts every leaf
MAX_CA_TTL = dt.timedelta(days=3650)
CA_EXPIRY_WARNING = dt.timedelta(days=30)  # as the sidecars' warning (identity_source)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@contextlib.contextmanager
def _cli_errors() -> Iterator[None]:
    try:
        yield
    except (CAError, IdentityError) as exc:
        raise click.ClickException(str(exc)) from exc


class DurationType(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            return parse_duration(value)
        except CAError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Mesh home (default: $TRUSTMESH_HOME, else the nearest .trustmesh/ in this directory "
    "or its parents, else ./.trustmesh).",
)


def _identity(trust_domain: str, namespace: str, app_id: str) -> AppIdentity:
    with _cli_errors():
        return check_workload_identity(AppIdentity(trust_domain, namespace, app_id))


@click.group("ca")
def ca_group() -> None:
    """The bundled CA: init, status, rotate, issue, token, serve, bundle."""


@ca_group.command("init")
@click.option("--trust-domain", default=DEFAULT_TRUST_DOMAIN, show_default=True)
@click.option(
    "--ttl",
    type=DURATION,
    default=format_duration(DEFAULT_CA_TTL),
    show_default=True,
    help="How long the CA is valid. When it expires, no SVID it signed is trusted any more and "
    "a new CA (and new join tokens) are needed: 'trustmesh ca status' shows the date.",
)
@click.option("--force", is_flag=True, help="Replace an existing CA (and drop its tokens).")
@home_option
def init_command(trust_domain: str, ttl: dt.timedelta, force: bool, home: str | None) -> None:
    """Create the root and issuer CA in the state directory."""
    _check_ca_ttl(ttl)
    with _cli_errors():
        layout = ca_layout(home, create=True)
        authority = CertificateAuthority.create(trust_domain, now=_utcnow(), ttl=ttl)
        save_ca(layout, authority, force=force)
        if force:
            rotation.forget(layout)  # a rotation under way was replacing the CA just replaced
    click.echo(
        f"created CA for trust domain {trust_domain!r} in {layout.directory}, "
        f"valid until {authority.not_after.isoformat()}"
    )


def _check_ca_ttl(ttl: dt.timedelta) -> None:
    if not MIN_CA_TTL <= ttl <= MAX_CA_TTL:
        raise click.BadParameter(
            f"a CA must be valid for {format_duration(MIN_CA_TTL)} to "
            f"{format_duration(MAX_CA_TTL)}, not {format_duration(ttl)}",
            param_hint="'--ttl'",
        )


@ca_group.command("status")
@click.option(
    "--svid-ttl", type=DURATION, default=format_duration(DEFAULT_LEAF_TTL), show_default=True,
    help="The SVID lifetime 'ca serve' issues: when a rotation's next step may run.",
)  # fmt: skip
@home_option
def status_command(svid_ttl: dt.timedelta, home: str | None) -> None:
    """Show the CA's trust domain and when its certificates expire."""
    with _cli_errors():
        layout = ca_layout(home)
        authority, trusted = load_ca(layout), load_bundle(layout)
        state = rotation.rotation_state(layout)
        wait = rotation.step_wait(layout, svid_ttl)
    now = _utcnow()
    click.echo(f"trust domain  {authority.trust_domain}")
    for role, cert in (("root CA", authority.root_cert), ("issuer CA", authority.issuer_cert)):
        click.echo(f"{role:<13} valid until {cert.not_valid_after_utc.isoformat()}"
                   f"  ({_time_left(cert.not_valid_after_utc - now)})")  # fmt: skip
    others = [c for c in trusted.authorities if c != authority.root_cert]
    for cert in others:
        click.echo(f"{'also trusted':<13} root valid until {cert.not_valid_after_utc.isoformat()}"
                   f"  ({_time_left(cert.not_valid_after_utc - now)})")  # fmt: skip
    if state.phase != rotation.NONE:
        step = "activate" if state.phase == rotation.PREPARED else "retire"
        click.echo(
            f"rotation      {state.phase} at {state.since.isoformat(timespec='seconds')}; next: "
            f"'trustmesh ca rotate {step}' from "
            f"{state.next_step_at(wait).isoformat(timespec='seconds')} "
            f"(one SVID lifetime: {format_duration(wait)})"
        )
    left = authority.not_after - now
    if left <= dt.timedelta(0):  # said during a rotation too: the CA that signs has expired
        click.echo(
            "the CA has expired: it signs nothing, and no peer chained to it is trusted; "
            "'trustmesh ca init --force' makes a new one (every sidecar then enrols again)"
        )
    elif left < CA_EXPIRY_WARNING and state.phase == rotation.NONE:
        click.echo(
            "the CA expires soon: replace it with 'trustmesh ca rotate prepare' "
            "(then activate, then retire, a day apart)"
        )


@ca_group.group("rotate")
def rotate_group() -> None:
    """Replace the CA without an outage: prepare, activate, retire (one SVID lifetime apart).

    For a CA that is ending, not one whose key leaked: until 'retire', SVIDs that key signs are
    trusted and renew under the new CA. A leaked key calls for 'ca init --force'.
    """


_SVID_TTL = click.option(
    "--svid-ttl",
    type=DURATION,
    default=format_duration(DEFAULT_LEAF_TTL),
    show_default=True,
    help="The SVID lifetime 'ca serve' issues: every sidecar renews within it. The longest "
    "a 'ca serve' of this CA has issued with is used if longer.",
)
_NOW = click.option("--now", is_flag=True, help="Do not wait for the previous step to spread.")


@rotate_group.command("prepare")
@click.option(
    "--ttl", type=DURATION, default=format_duration(DEFAULT_CA_TTL), show_default=True,
    help="How long the new CA is valid.",
)  # fmt: skip
@home_option
def rotate_prepare_command(ttl: dt.timedelta, home: str | None) -> None:
    """Make the new CA and trust its root beside the current one (which still signs)."""
    _check_ca_ttl(ttl)
    with _cli_errors():
        new = rotation.prepare(ca_layout(home), now=_utcnow(), ttl=ttl)
    click.echo(
        f"prepared a new CA valid until {new.not_after.isoformat()}; sidecars trust its root "
        "as they renew: 'trustmesh ca rotate activate' once every sidecar has renewed "
        "(one SVID lifetime)"
    )


@rotate_group.command("activate")
@_SVID_TTL
@_NOW
@home_option
def rotate_activate_command(svid_ttl: dt.timedelta, now: bool, home: str | None) -> None:
    """Sign with the new CA; the old root stays trusted until 'retire'."""
    with _cli_errors():
        new = rotation.activate(ca_layout(home), now=_utcnow(), wait=svid_ttl, force=now)
    click.echo(
        f"the new CA signs now (valid until {new.not_after.isoformat()}); the old root stays "
        "trusted: 'trustmesh ca rotate retire' once every SVID it signed has expired "
        "(one SVID lifetime)"
    )


@rotate_group.command("retire")
@_SVID_TTL
@_NOW
@home_option
def rotate_retire_command(svid_ttl: dt.timedelta, now: bool, home: str | None) -> None:
    """Stop trusting the old root; sidecars drop it as they renew."""
    with _cli_errors():
        rotation.retire(ca_layout(home), now=_utcnow(), wait=svid_ttl, force=now)
    click.echo("the old root is no longer trusted; sidecars drop it as they renew")


@rotate_group.command("abort")
@home_option
def rotate_abort_command(home: str | None) -> None:
    """Undo 'prepare': the new CA is deleted and its root no longer trusted."""
    with _cli_errors():
        rotation.abort(ca_layout(home))
    click.echo("rotation aborted: the current CA is the only one trusted")


def _time_left(left: dt.timedelta) -> str:
    if left <= dt.timedelta(0):
        return "expired"
    if left >= dt.timedelta(days=2):
        return f"{round(left.total_seconds() / 86400)} days left"
    return f"{int(left.total_seconds() // 3600)} hours left"


@ca_group.command("issue")
@click.option("--app-id", required=True)
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True)
@click.option("--ttl", type=DURATION, default=format_duration(DEFAULT_LEAF_TTL), show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@home_option
def issue_command(
    app_id: str, namespace: str, ttl: dt.timedelta, out_dir: str, home: str | None
) -> None:
    """Issue an SVID directly to files: svid.pem, svid.key (0600), bundle.pem."""
    with _cli_errors():
        layout = ca_layout(home)
        authority = load_ca(layout)
        identity = _identity(authority.trust_domain, namespace, app_id)
        svid = authority.issue(identity, now=_utcnow(), ttl=ttl)
        try:
            save_svid_dir(out_dir, svid, load_bundle(layout))  # both roots during a rotation
        except OSError as exc:
            raise click.ClickException(f"cannot write {out_dir}: {exc.strerror}") from exc
    click.echo(f"issued {identity} until {svid.not_after.isoformat()} into {out_dir}")


@ca_group.command("token")
@click.option("--app-id", required=True)
@click.option("--namespace", default=DEFAULT_NAMESPACE, show_default=True)
@click.option("--ttl", type=DURATION, default=format_duration(DEFAULT_TOKEN_TTL), show_default=True)
@home_option
def token_command(app_id: str, namespace: str, ttl: dt.timedelta, home: str | None) -> None:
    """Print a one-time join token for an identity; the CA keeps only its hash."""
    with _cli_errors():
        layout = ca_layout(home)
        bundle = load_bundle(layout)
        identity = _identity(root_trust_domain(bundle.authorities[0]), namespace, app_id)
        token = TokenStore(layout).issue(identity, now=_utcnow(), ttl=ttl)
    click.echo(token)


@ca_group.command("bundle")
@home_option
def bundle_command(home: str | None) -> None:
    """Print the trust bundle (PEM)."""
    with _cli_errors():
        click.echo(load_bundle(ca_layout(home)).to_pem().decode("ascii"), nl=False)


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="'--listen'")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise click.BadParameter(
                f"listen on an IP address (or localhost), not {host!r}", param_hint="'--listen'"
            ) from None
    return host, int(port_text)


def _configure_logging() -> None:
    """JSON lines on stderr: stdout carries only the readiness line scripts wait for.

    ``TRUSTMESH_LOG_FORMAT=console`` (set by ``trustmesh run`` when its user watches a terminal)
    asks for readable lines instead, as the sidecars write them there.
    """
    import structlog

    renderers: list = [structlog.processors.JSONRenderer()]
    if os.environ.get("TRUSTMESH_LOG_FORMAT", "").lower() == "console":
        from sidecar.logsetup import plain_values

        renderers = [plain_values, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


@ca_group.command("serve")
@click.option(
    "--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT; port 0 picks one."
)
@click.option(
    "--svid-ttl", type=DURATION, default=format_duration(DEFAULT_LEAF_TTL), show_default=True
)
@click.option(
    "--io-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a client gets for the TLS handshake and for sending its request.",
)
@home_option
def serve_command(listen: str, svid_ttl: dt.timedelta, io_timeout: float, home: str | None) -> None:
    """Run the CSR signing service (HTTPS); prints 'listening on https://HOST:PORT'."""
    import trio

    from .server import CAServer, load_served_files, run_ca_server
    from .service import SigningService

    host, port = _parse_listen(listen)
    with _cli_errors():
        layout = ca_layout(home)
        authority, trusted, signature = load_served_files(layout)
        rotation.record_svid_lifetime(layout, svid_ttl)  # what rotation steps must wait
        service = SigningService(authority, TokenStore(layout), svid_ttl=svid_ttl, trusted=trusted)
        server = CAServer(service, io_timeout=io_timeout, state=layout, state_signature=signature)
    _configure_logging()

    def ready(urls: list[str]) -> None:
        for url in urls:
            click.echo(f"listening on {url}")
        sys.stdout.flush()

    try:
        trio.run(run_ca_server, server, host, port, ready)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
