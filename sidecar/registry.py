"""Where the running sidecars are: App ID → inbound and admin addresses.

On one machine the mesh state directory is the name service: each sidecar writes
``registry/<namespace>/<app-id>.json`` (atomically) once it is ready and removes it on exit.
Lookups are answered from memory for half a second, then the file is stat-ed again and re-read
only when it changed, so a restarted sidecar on a new port is found within that half second
without a stat and a liveness check on every request. A record whose process is gone is
ignored, so a crashed sidecar does not send callers to a port some other process may now own.

Hosts that share no directory use a static ``--peers`` file (YAML map of ``app-id`` or
``app-id.namespace`` → ``host:port``) or DNS with a template (``--resolve dns``; default Dapr's
Kubernetes form ``{app_id}-dapr.{namespace}.svc.cluster.local:{port}``, ``{port}`` being the
inbound port every sidecar of the mesh listens on). Whatever answers, the outbound peer check
stays exact: the sidecar at that address must prove the target's identity over mTLS, so a
resolver can misroute a call into a refusal, never into the wrong app.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import string
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from identity import IdentityError, atomic_write, validate_app_id, validate_namespace

from .errors import SidecarError
from .state import yaml_loader

LOOKUP_TTL = 0.5


class RegistryError(SidecarError):
    code = "ERR_REGISTRY"


@dataclass(frozen=True)
class SidecarRecord:
    app_id: str
    namespace: str
    inbound: str  # host:port of the mTLS listener ("" for an outbound-only app)
    admin: str  # host:port of the admin endpoint
    http: str  # host:port of the outbound (app-facing) listener
    pid: int
    app_port: int | None = None
    started_at: float = 0.0

    @functools.cached_property
    def inbound_address(self) -> tuple[str, int] | None:
        """Parsed once per record (a record is looked up for every request sent)."""
        return split_address(self.inbound) if self.inbound else None


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise RegistryError(f"invalid address {text!r}: expected host:port")
    return host.strip("[]"), int(port)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Registry:
    def __init__(self, home: Path, *, lookup_ttl: float = LOOKUP_TTL) -> None:
        self.root = Path(home) / "registry"
        self._cache: dict[Path, tuple[int, SidecarRecord | None]] = {}
        self._lookup_ttl = lookup_ttl
        self._recent: dict[tuple[str, str], tuple[float, SidecarRecord | None]] = {}

    def path_for(self, app_id: str, namespace: str) -> Path:
        return self.root / namespace / f"{app_id}.json"

    def register(self, record: SidecarRecord) -> None:
        path = self.path_for(record.app_id, record.namespace)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, json.dumps(asdict(record), indent=2).encode(), mode=0o600)

    def unregister(self, app_id: str, namespace: str, pid: int) -> None:
        """Remove our record, and only ours: a newer sidecar may have replaced it."""
        path = self.path_for(app_id, namespace)
        record = self._read(path)
        if record is not None and record.pid == pid:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _read(self, path: Path) -> SidecarRecord | None:
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            self._cache.pop(path, None)
            return None
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            record = SidecarRecord(**json.loads(path.read_bytes()))
        except (OSError, ValueError, TypeError):
            record = None  # half-written or foreign file: treat as absent
        self._cache[path] = (mtime, record)
        return record

    def lookup(self, app_id: str, namespace: str) -> SidecarRecord | None:
        key = (app_id, namespace)
        now = time.monotonic()
        recent = self._recent.get(key)
        if recent is not None and now - recent[0] < self._lookup_ttl:
            return recent[1]
        record = self._read(self.path_for(app_id, namespace))
        if record is not None and not pid_alive(record.pid):
            record = None
        self._recent[key] = (now, record)
        return record

    def records(self) -> list[SidecarRecord]:
        out = []
        if not self.root.is_dir():
            return out
        for path in sorted(self.root.glob("*/*.json")):
            record = self._read(path)
            if record is not None and pid_alive(record.pid):
                out.append(record)
        return out


class StaticPeers:
    """``--peers FILE``: a fixed map for hosts that share no mesh directory."""

    def __init__(self, path: Path, default_namespace: str) -> None:
        try:
            data = yaml_loader.safe_load(yaml_loader.read_text(path))
        except OSError as exc:
            raise RegistryError(f"cannot read peers file {path}: {exc}") from exc
        except yaml.YAMLError as exc:  # one line, as every YAML error the CLI prints
            line, problem = yaml_loader.problem_text(exc)
            where = f"{line}:" if line is not None else ""
            raise RegistryError(f"cannot read peers file {path}:{where} {problem}") from None
        if not isinstance(data, dict):
            raise RegistryError(f"peers file {path} must be a map of app-id to host:port")
        self._peers: dict[tuple[str, str], tuple[str, int]] = {}
        for key, value in data.items():
            app_id, _, namespace = str(key).partition(".")
            self._peers[(app_id, namespace or default_namespace)] = split_address(str(value))

    def lookup(self, app_id: str, namespace: str) -> tuple[str, int] | None:
        return self._peers.get((app_id, namespace))


DEFAULT_DNS_TEMPLATE = "{app_id}-dapr.{namespace}.svc.cluster.local:{port}"
_TEMPLATE_FIELDS = {"app_id", "namespace", "port"}
RESOLUTION_MODES = ("registry", "peers", "dns")

Resolve = Callable[[str, str], tuple[str, int] | None]


class DnsNames:
    """``--resolve dns``: an App ID's inbound address is a name, made from a template."""

    def __init__(self, template: str, port: int) -> None:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError as exc:
            raise RegistryError(f"invalid DNS template {template!r}: {exc}") from exc
        unknown = fields - _TEMPLATE_FIELDS
        if unknown or "app_id" not in fields:
            raise RegistryError(
                f"invalid DNS template {template!r}: use {{app_id}}, {{namespace}} and {{port}}"
                + (f", not {', '.join(sorted(unknown))}" if unknown else "")
            )
        if "{port}" in template and not 0 < port < 65536:
            raise RegistryError(
                "--resolve dns needs --inbound-port: the port every sidecar's inbound listener "
                "uses, which the DNS template's {port} stands for"
            )
        self.template, self.port = template, port
        split_address(self._format("app", "default"))  # fail now on a template with no port

    def _format(self, app_id: str, namespace: str) -> str:
        return self.template.format(app_id=app_id, namespace=namespace, port=self.port)

    def lookup(self, app_id: str, namespace: str) -> tuple[str, int] | None:
        try:  # only names that are App IDs reach DNS: nothing a caller writes becomes a host
            validate_app_id(app_id)
            validate_namespace(namespace)
        except IdentityError:
            return None
        return split_address(self._format(app_id, namespace))


def build_resolver(
    mode: str,
    registry: Registry,
    *,
    default_namespace: str,
    peers: Path | None = None,
    dns_template: str = DEFAULT_DNS_TEMPLATE,
    port: int = 0,
) -> Resolve:
    """The App ID → inbound address function for one of :data:`RESOLUTION_MODES`."""
    if mode == "peers":
        if peers is None:
            raise RegistryError("--resolve peers needs --peers FILE")
        return StaticPeers(peers, default_namespace).lookup
    if mode == "dns":
        return DnsNames(dns_template, port).lookup
    if mode != "registry":
        raise RegistryError(f"unknown resolution mode {mode!r}: use {', '.join(RESOLUTION_MODES)}")

    def from_registry(app_id: str, namespace: str) -> tuple[str, int] | None:
        record = registry.lookup(app_id, namespace)
        return record.inbound_address if record is not None else None

    return from_registry
