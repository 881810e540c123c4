"""Assembling one sidecar: identity, listeners, proxies, admin, registry, drain.

Start order matters for callers: the SVID first (nothing can be served without it), then the
listeners (ports chosen by the OS when given as 0), then the registry record, which is the
moment other sidecars can find this one. On SIGTERM/SIGINT the listeners stop accepting,
in-flight exchanges finish within the grace period, and the record is removed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import structlog
import trio

from identity import AppIdentity, TrustBundle

from .admin import AdminHandler
from .audit import AuditLog, AuditSettings
from .errors import SidecarError
from .http.server import HttpServer, ServerLimits
from .identity_source import (
    IdentityHolder,
    identity_map_from_resources,
    run_ca_identity,
    watch_identity_map,
    watch_svid_dir,
)
from .mcp.sessions import seen_tools_path, write_seen_tools
from .metrics import SidecarMetrics, granted_tool_names
from .proxy.inbound import InboundConfig, InboundProxy
from .proxy.outbound import OutboundConfig, OutboundProxy
from .registry import DEFAULT_DNS_TEMPLATE, Registry, SidecarRecord, build_resolver
from .state.policy_builder import deny_all_policy
from .state.policy_dir import PolicyDirStore
from .state.store import MeshStore
from .state.tick_signature import SignaturePerTick
from .state.watcher import PolicyHolder, parse_config_option, watch_policy
from .tracing import Tracing

log = structlog.get_logger("trustmesh.sidecar")


class SidecarConfigError(SidecarError):
    code = "ERR_SIDECAR_CONFIG"
    http_status = 400


@dataclass
class SidecarOptions:
    app_id: str
    home: Path
    namespace: str = "default"
    trust_domain: str = "public"
    app_port: int | None = None
    http_port: int = 3500
    inbound_port: int = 0
    admin_port: int = 0
    inbound_host: str = "127.0.0.1"
    ca_url: str | None = None
    token: str | None = None
    ca_bundle: Path | None = None
    svid_dir: Path | None = None
    identity: str = "auto"  # auto | builtin (--ca-url) | files (--svid-dir) | spire
    spiffe_endpoint: str | None = None  # Workload API socket (default $SPIFFE_ENDPOINT_SOCKET)
    peers: Path | None = None
    resolve: str | None = (
        None  # registry | peers | dns (default: peers with --peers, else registry)
    )
    dns_template: str = DEFAULT_DNS_TEMPLATE
    policy_dir: Path | None = None  # read-only policy (a mounted ConfigMap) instead of the home
    api_token: bytes | None = None  # DAPR_API_TOKEN: the app must present it on the outbound port
    app_api_token: bytes | None = None  # APP_API_TOKEN: presented to the app as dapr-api-token
    config: str | None = None  # --config NAME|FILE, overriding the App ID's binding
    limits: ServerLimits = field(default_factory=ServerLimits)
    audit: AuditSettings | None = None  # None: <home>/audit/<namespace>.<app-id>.jsonl
    tracing: Tracing | None = None  # None: from the OTEL_* variables (off when unset)
    handle_signals: bool = True


@dataclass
class RunningSidecar:
    """What a started sidecar tells whoever started it (tests, the runner)."""

    identity: AppIdentity
    http_address: tuple[str, int]
    inbound_address: tuple[str, int] | None
    admin_address: tuple[str, int]
    servers: list[HttpServer]
    holder: IdentityHolder

    def drain(self) -> None:
        for server in self.servers:
            server.drain()


def _port(listeners: list[trio.SocketListener]) -> tuple[str, int]:
    host, port = listeners[0].socket.getsockname()[:2]
    return host, port


async def _open(host: str, port: int, avoid: int | None = None) -> list[trio.SocketListener]:
    """Listen on ``host:port``. With port 0 the kernel picks, and it may pick ``avoid`` (the
    app's port, which the app may not have bound yet): then pick again, so a sidecar never takes
    the port its own app is about to listen on."""
    for _ in range(8):
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise SidecarConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        if port != 0 or avoid is None or _port(listeners)[1] != avoid:
            return listeners
        for listener in listeners:
            await listener.aclose()
    raise SidecarConfigError(f"cannot find a free port on {host} other than {avoid}")


async def run_sidecar(opts: SidecarOptions, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    me = AppIdentity(opts.trust_domain, opts.namespace, opts.app_id)
    holder = IdentityHolder(me)
    registry = Registry(opts.home)
    resolve = build_resolver(
        opts.resolve or ("peers" if opts.peers else "registry"),
        registry,
        default_namespace=opts.namespace,
        peers=opts.peers,
        dns_template=opts.dns_template,
        port=opts.inbound_port,
    )
    metrics = SidecarMetrics()
    metrics.add_gauge(
        "trustmesh_svid_expiry_seconds",
        "Seconds until this sidecar's SVID expires.",
        holder.seconds_until_expiry,
    )
    metrics.add_gauge(
        "trustmesh_trust_bundle_expiry_seconds",
        "Seconds until the first CA of this sidecar's trust bundle expires.",
        holder.seconds_until_trust_ends,
    )
    audit = AuditLog(
        opts.audit or AuditSettings(opts.home / "audit" / f"{opts.namespace}.{opts.app_id}.jsonl"),
        signer=lambda: holder.current.svid if holder.current is not None else None,
        tracing=opts.tracing or Tracing.from_environment(opts.app_id),
    )
    metrics.watch_audit(audit)
    registered = False
    ready = False
    opened: list[trio.SocketListener] = []
    try:
        _check_config_file(opts.config)
        # The ports first: a port in use fails the start before an SVID is fetched (a join
        # token is good once, and would be spent on a sidecar that cannot serve) and before
        # anything is logged (the error is the one line a failed start prints).
        outbound_listeners = await _open("127.0.0.1", opts.http_port, avoid=opts.app_port)
        opened += outbound_listeners
        inbound_listeners = []
        if opts.app_port is not None:
            inbound_listeners = await _open(opts.inbound_host, opts.inbound_port, opts.app_port)
            opened += inbound_listeners
        admin_listeners = await _open("127.0.0.1", opts.admin_port, avoid=opts.app_port)
        opened += admin_listeners
        async with trio.open_nursery() as nursery:
            await nursery.start(audit.run)
            store = PolicyDirStore(opts.policy_dir) if opts.policy_dir else MeshStore(opts.home)
            store_signature = SignaturePerTick(store.signature)  # one listing per tick, shared
            map_changed: list[Callable[[], None]] = []  # filled once the proxies exist
            await nursery.start(
                partial(
                    watch_identity_map,
                    lambda: identity_map_from_resources(
                        store.snapshot(me.app_id, me.namespace).resources
                    ),
                    store_signature,
                    on_change=map_changed,
                )
            )
            await _start_identity(opts, holder, nursery)
            me = holder.material().svid.identity  # the same App, carrying its SVID's SPIFFE ID
            policy = PolicyHolder(deny_all_policy("not loaded yet"))

            outbound = OutboundProxy(
                OutboundConfig(me, api_token=opts.api_token, send_timeout=opts.limits.read_timeout),
                resolve,
                holder,
                metrics,
                nursery,
                audit=audit,
            )
            holder.on_trust_narrowed.append(outbound.retire_streams)
            map_changed.append(outbound.recheck_streams)  # a binding moved a peer's App ID
            inbound = InboundProxy(
                InboundConfig(
                    me,
                    opts.app_port,
                    app_api_token=opts.app_api_token,
                    send_timeout=opts.limits.read_timeout,
                ),
                policy,
                audit,
                metrics,
                nursery,
            )
            inbound.mcp_sessions.on_tools_seen = partial(
                write_seen_tools, seen_tools_path(opts.home, me.namespace, me.app_id)
            )
            await nursery.start(
                partial(
                    watch_policy,
                    policy,
                    store,
                    me,
                    parse_config_option(opts.config, store),
                    store_signature=store_signature,
                    on_policy=lambda new: _on_policy(new, inbound, metrics),
                    on_applied=lambda _new: inbound.policy_applied(),
                    prepare=inbound.warm_keys,
                )
            )
            admin = AdminHandler(lambda: status(), metrics, opts.app_port)
            servers = [HttpServer("outbound", outbound.handle, opts.limits)]
            listeners = [outbound_listeners]
            inbound_address = None
            if opts.app_port is not None:
                inbound_server = HttpServer(
                    "inbound",
                    inbound.handle,
                    opts.limits,
                    ssl_context=lambda: holder.material().server,
                )
                # A CA dropped from the bundle: its peers' open connections end too.
                holder.on_trust_narrowed.append(inbound_server.retire_connections)
                holder.on_trust_narrowed.append(inbound.retire_streams)
                map_changed.append(inbound.recheck_streams)  # a binding moved a caller's App ID
                servers.append(inbound_server)
                listeners.append(inbound_listeners)
                inbound_address = _port(listeners[-1])
            servers.append(HttpServer("admin", admin.handle, opts.limits, engine=h11.Connection))
            listeners.append(admin_listeners)
            http_address, admin_address = _port(listeners[0]), _port(listeners[-1])

            def status() -> dict[str, Any]:
                material = holder.current
                return {
                    "app_id": me.app_id,
                    "namespace": me.namespace,
                    "spiffe_id": str(me),
                    "pid": os.getpid(),
                    "svid": None
                    if material is None
                    else {
                        "serial": f"{material.svid.serial_number:x}",
                        "not_after": material.svid.not_after.isoformat(),
                        "generation": material.generation,
                        "renewals": holder.renewals,
                    },
                    "svid_error": holder.last_error,
                    "trust_bundle": None
                    if material is None
                    else {
                        "authorities": len(material.bundle.authority_ders()),
                        "not_after": _iso(holder.trust_ends()),
                    },
                    "listeners": {
                        "http": _fmt(http_address),
                        "inbound": _fmt(inbound_address) if inbound_address else None,
                        "admin": _fmt(admin_address),
                    },
                    "policy": policy.status(),
                    "audit": audit.status(),
                }

            async with trio.open_nursery() as serving:
                for server, server_listeners in zip(servers, listeners, strict=True):
                    await serving.start(server.serve, server_listeners)
                admin.listeners_up = True
                registry.register(
                    SidecarRecord(
                        app_id=me.app_id,
                        namespace=me.namespace,
                        inbound=_fmt(inbound_address) if inbound_address else "",
                        admin=_fmt(admin_address),
                        http=_fmt(http_address),
                        pid=os.getpid(),
                        app_port=opts.app_port,
                        started_at=time.time(),
                    )
                )
                registered = True
                running = RunningSidecar(
                    me, http_address, inbound_address, admin_address, servers, holder
                )
                log.info(
                    "sidecar ready",
                    spiffe_id=str(me),
                    http=_fmt(http_address),
                    inbound=_fmt(inbound_address) if inbound_address else None,
                    admin=_fmt(admin_address),
                )
                task_status.started(running)
                ready = True
                if opts.handle_signals:
                    serving.start_soon(_drain_on_signal, running)
            nursery.cancel_scope.cancel()
    finally:
        for listener in opened:  # closed by its server once served; else here (twice is a no-op)
            listener.socket.close()
        if registered:
            registry.unregister(me.app_id, me.namespace, os.getpid())
        audit.close()
        audit.tracing.shutdown()
        if ready:  # a sidecar that never got ready says why in the one error line it exits with
            log.info("sidecar stopped", spiffe_id=str(me))


def _on_policy(new_policy, inbound: InboundProxy, metrics: SidecarMetrics) -> None:
    inbound.on_policy(new_policy)
    # The tool label's values: only names some grant names (a bounded set).
    metrics.set_granted_tools(granted_tool_names(new_policy.mcp.policy) if new_policy.mcp else ())


async def _drain_on_signal(running: RunningSidecar) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("draining", signal=signal.Signals(signum).name)
            running.drain()
            return


def _check_config_file(value: str | None) -> None:
    """``--config FILE`` must name a file that exists when the sidecar starts: a mistyped path
    would otherwise start a sidecar that refuses every request (no valid policy yet) and looks
    healthy. A file that exists but is broken, or is broken later, is refused at load and
    reported on /v1/status, and the last good policy (or deny-all) stays in force."""
    if value is None:
        return
    path = Path(value)
    if parse_config_option(value, None).source is not None and not path.is_file():
        problem = "not a file" if path.exists() else "no such file"
        if path.is_symlink() and not path.exists():
            problem = f"a symlink to {os.readlink(path)}, which does not exist"
        raise SidecarConfigError(
            f"--config {value}: {problem} (a Configuration in the mesh store is named with "
            "lower-case letters, digits and '-' only)"
        )


async def _start_identity(opts: SidecarOptions, holder: IdentityHolder, nursery) -> None:
    if opts.identity == "spire":
        if opts.svid_dir is not None or opts.ca_url is not None:
            raise SidecarConfigError(
                "--identity spire takes the SVID from the Workload API: drop --svid-dir/--ca-url"
            )
        from .identity_spire import run_workload_api_identity

        await nursery.start(run_workload_api_identity, holder, opts.spiffe_endpoint)
        return
    if opts.identity == "files" and opts.svid_dir is None:
        raise SidecarConfigError("--identity files needs --svid-dir DIR")
    if opts.identity == "builtin" and opts.ca_url is None:
        raise SidecarConfigError("--identity builtin needs --ca-url URL and --token")
    if opts.svid_dir is not None and opts.ca_url is not None:
        raise SidecarConfigError("give either --svid-dir or --ca-url/--token, not both")
    if opts.svid_dir is not None:
        await nursery.start(watch_svid_dir, holder, opts.svid_dir)
        return
    if opts.ca_url is not None:
        if not opts.token:
            raise SidecarConfigError(
                "--ca-url needs --token (a join token from 'trustmesh ca token')"
            )
        bundle_path = opts.ca_bundle or opts.home / "ca" / "bundle.pem"
        if not bundle_path.exists():
            raise SidecarConfigError(
                f"no CA bundle at {bundle_path}: pass --ca-bundle to trust the CA's certificate"
            )
        TrustBundle.load(bundle_path)  # a broken file fails the start, here
        await nursery.start(
            run_ca_identity, holder, opts.ca_url, opts.token, partial(TrustBundle.load, bundle_path)
        )
        return
    raise SidecarConfigError(
        "no identity source: pass --svid-dir DIR, --ca-url URL --token T, or --identity spire"
    )


def _fmt(address: tuple[str, int] | None) -> str:
    if address is None:
        return ""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def print_ready_line(running: RunningSidecar) -> None:
    """One machine-readable line on stdout, for runners and tests started as processes."""
    payload = {
        "event": "ready",
        "app_id": running.identity.app_id,
        "http": _fmt(running.http_address),
        "inbound": _fmt(running.inbound_address) if running.inbound_address else None,
        "admin": _fmt(running.admin_address),
    }
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _iso(moment) -> str | None:
    return None if moment is None else moment.isoformat()
