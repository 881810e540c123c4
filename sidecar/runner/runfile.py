"""Dapr's multi-app run template (``dapr run -f``), parsed and validated without side effects.

Theory of operation: the YAML is *composed* (not loaded) so every key keeps its line; the
document is walked against explicit key tables, so a typo is refused as "unknown key" with its
line instead of being silently ignored as Dapr's non-strict decoder would. Keys Dapr knows that
trustmesh does not use are accepted and listed in :attr:`RunFile.ignored`, so the runner can say
so. Apart from checking that paths exist, nothing here touches the system.

Dapr's rules kept (dapr/cli ``pkg/runfileconfig``, ``pkg/standalone/run.go``):

* ``version`` is a required non-zero integer; ``common`` holds shared keys only; ``apps[]`` holds
  shared keys plus per-app keys; an app's unset shared key takes ``common``'s; ``env`` maps merge
  with the app winning.
* ``appDirPath`` is required, relative to the template file; ``appID`` defaults to its basename.
  ``common`` paths are relative to the template file, an app's other paths to its ``appDirPath``;
  ``~`` is expanded; every path must exist.
* Config precedence: ``apps[i].configFilePath`` > ``<appDirPath>/.dapr/config.yaml`` >
  ``common.configFilePath``. Resources: ``apps[i].resourcesPaths`` (+ ``resourcesPath``) >
  ``<appDirPath>/.dapr/resources`` > ``common``'s. Dapr's last fallback, ``~/.dapr``, is not
  read: trustmesh keeps its state in its own directory.
* ``command`` is an argv list (no shell); an app without one starts only its sidecar.

trustmesh's own choices: ``appProtocol`` must be ``http`` (the sidecar forwards HTTP/1.1 only);
``appChannelAddress`` must be loopback; ``appPort`` absent (or negative) means an outbound-only
app, as in Dapr, and ``appPort: 0`` asks trustmesh to pick a free port and pass it as
``APP_PORT``; ``daprHTTPPort`` absent or ``<= 0`` lets the sidecar pick one. The extra key
``mcpServer: true`` (or ``{path: /mcp}``) registers the app as an MCP server; ``user:`` (per app
or in ``common``) names the unprivileged user the app runs as (see :mod:`.users`). Log files
(``appLogDestination``/``daprdLogDestination`` ``file`` or ``fileAndConsole``) go to
``<home>/logs/<app-id>.log``, not into ``appDirPath`` as Dapr's do: the source tree stays clean.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..state import yaml_loader
from .errors import RunFileError

DEFAULT_FILE_NAME = "dapr.yaml"
DEFAULT_MCP_PATH = "/mcp"
LOG_DESTINATIONS = ("console", "file", "fileAndConsole")

# Dapr log levels → the sidecar's --log-level choices.
LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "fatal": "error",
    "panic": "error",
}

_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"


# --- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSpec:
    """One app of the template, with ``common`` merged in and every path absolute."""

    app_id: str
    app_dir: Path
    line: int  # where the app's entry starts in the template
    command: tuple[str, ...] = ()
    app_port: int | None = None  # None: outbound-only; 0: pick one
    http_port: int | None = None  # daprHTTPPort; None: the sidecar picks one
    env: Mapping[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    resources_paths: tuple[Path, ...] = ()
    log_level: str = "info"  # the sidecar's spelling
    health_check: bool = False
    health_check_path: str = "/healthz"
    mcp_server: dict[str, str] | None = None
    app_log_destination: str = "fileAndConsole"
    sidecar_log_destination: str = "console"
    user: str | None = None  # None: the runner's default (see runner.users)
    # How errors name the two fixed ports: run-file fields, or the flags of a single-app run.
    port_labels: tuple[str, str] = ("appPort", "daprHTTPPort")


@dataclass(frozen=True)
class RunFile:
    path: Path
    version: int
    name: str | None
    apps: tuple[AppSpec, ...]
    ignored: tuple[str, ...] = ()  # "file:line: key 'x' …" notes for keys accepted and unused

    @property
    def label(self) -> str:
        return self.name or self.path.parent.name or str(self.path)


# --- key tables --------------------------------------------------------------------------------

# Shared keys (``common`` and ``apps[]``) trustmesh uses.
SHARED_USED = (
    "configFilePath",
    "appProtocol",
    "logLevel",
    "resourcesPath",
    "resourcesPaths",
    "env",
    "enableAppHealthCheck",
    "appHealthCheckPath",
    "appSSL",
    "appLogDestination",
    "daprdLogDestination",
    "user",  # trustmesh's: the unprivileged user the app runs as (runner as root)
)
# Shared keys Dapr knows and trustmesh accepts without using them.
SHARED_IGNORED = (
    "apiListenAddresses",
    "enableProfiling",
    "appMaxConcurrency",
    "placementHostAddress",
    "schedulerHostAddress",
    "maxBodySize",
    "readBufferSize",
    "daprHTTPMaxRequestSize",  # the docs' older names for the two above
    "daprHTTPReadBufferSize",
    "appHealthProbeInterval",
    "appHealthProbeTimeout",
    "appHealthThreshold",
    "enableApiLogging",
    "runtimePath",
)
APP_USED = (
    "appDirPath",
    "appID",
    "appPort",
    "daprHTTPPort",
    "command",
    "appChannelAddress",
    "unixDomainSocket",
    "mcpServer",
)
APP_IGNORED = (
    "daprGRPCPort",
    "daprInternalGRPCPort",
    "profilePort",
    "metricsPort",
    "containerImage",  # Kubernetes only (dapr run -k)
    "containerImagePullPolicy",
    "createService",
)
TOP_LEVEL = ("version", "name", "common", "apps")


# --- reading nodes -----------------------------------------------------------------------------


class _Reader:
    """Typed access to composed YAML nodes; every refusal names the file and line."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._loader = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, message: str) -> RunFileError:
        return RunFileError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _NULL:
                raise self.fail(key, f"{what}: keys must be plain names")
            if key.value in out:
                first = out[key.value][0].start_mark.line + 1
                raise self.fail(key, f"duplicate key {key.value!r} (first at line {first})")
            out[key.value] = (key, value)
        return out

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL

    def integer(self, node: yaml.Node, key: str) -> int:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _INT:
            raise self.fail(node, f"{key} must be an integer")
        return int(self._loader.construct_yaml_int(node))

    def boolean(self, node: yaml.Node, key: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL:
            raise self.fail(node, f"{key} must be true or false")
        return bool(self._loader.construct_yaml_bool(node))

    def text(self, node: yaml.Node, key: str) -> str:
        # Like yaml.v2 decoding into a Go string: any scalar's text is taken as written.
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{key} must be a single value, not a list or mapping")
        return str(node.value)

    def strings(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node]]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{key} must be a list")
        out = []
        for item in node.value:
            if not isinstance(item, yaml.ScalarNode) or self.is_null(item) or item.value == "":
                raise self.fail(item, f"{key}: every entry must be a non-empty string")
            out.append((str(item.value), item))
        return out


# --- paths -------------------------------------------------------------------------------------


def _absolute(raw: str, base: Path) -> Path:
    path = Path(os.path.expanduser(raw))
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _existing(reader: _Reader, node: yaml.Node, key: str, raw: str, base: Path) -> Path:
    path = _absolute(raw, base)
    if not path.exists():
        raise reader.fail(node, f"{key} {raw!r}: {path} does not exist")
    return path


# --- the shared section ------------------------------------------------------------------------


@dataclass
class _Shared:
    """Shared keys as written in one section; None means "not set here"."""

    config_file: Path | None = None
    log_level: str | None = None
    resources: list[Path] | None = None
    env: dict[str, str] = field(default_factory=dict)
    health_check: bool | None = None
    health_check_path: str | None = None
    app_log: str | None = None
    sidecar_log: str | None = None
    user: str | None = None


def _read_shared(
    reader: _Reader,
    items: dict[str, tuple[yaml.Node, yaml.Node]],
    base: Path,
    ignored: list[str],
) -> _Shared:
    shared = _Shared()
    resources: list[Path] = []
    for key, (key_node, node) in items.items():
        if key in SHARED_IGNORED:
            ignored.append(f"{reader.source}:{key_node.start_mark.line + 1}: {key}")
            continue
        if key not in SHARED_USED or reader.is_null(node):
            continue
        if key == "configFilePath":
            path = _existing(reader, node, key, reader.text(node, key), base)
            if not path.is_file():
                raise reader.fail(node, f"configFilePath {path} is not a file")
            shared.config_file = path
        elif key == "appProtocol":
            protocol = reader.text(node, key).lower()
            if protocol not in ("", "http"):
                raise reader.fail(
                    node,
                    f"appProtocol {protocol!r} is not supported: trustmesh sidecars forward "
                    "HTTP/1.1 to the app (use 'http')",
                )
        elif key == "appSSL":
            if reader.boolean(node, key):
                raise reader.fail(node, "appSSL is not supported: the app is reached over HTTP")
        elif key == "logLevel":
            level = reader.text(node, key).lower()
            if level not in LOG_LEVELS:
                raise reader.fail(
                    node, f"logLevel {level!r} is not one of {', '.join(sorted(LOG_LEVELS))}"
                )
            shared.log_level = LOG_LEVELS[level]
        elif key == "resourcesPath":
            resources.append(_existing(reader, node, key, reader.text(node, key), base))
        elif key == "resourcesPaths":
            resources += _resource_list(reader, node, base)
        elif key == "env":
            shared.env = _env(reader, node)
        elif key == "enableAppHealthCheck":
            shared.health_check = reader.boolean(node, key)
        elif key == "appHealthCheckPath":
            path_text = reader.text(node, key)
            if not path_text.startswith("/"):
                raise reader.fail(node, "appHealthCheckPath must start with '/'")
            shared.health_check_path = path_text
        elif key == "user":
            name = reader.text(node, key)
            if not name or any(c in name for c in ":/\x00") or name != name.strip():
                raise reader.fail(node, f"user {name!r} must be a user name or a numeric uid")
            shared.user = name
        elif key in ("appLogDestination", "daprdLogDestination"):
            value = reader.text(node, key)
            if value not in LOG_DESTINATIONS:
                raise reader.fail(node, f"{key} must be one of {', '.join(LOG_DESTINATIONS)}")
            if key == "appLogDestination":
                shared.app_log = value
            else:
                shared.sidecar_log = value
    if resources:
        shared.resources = resources
    return shared


def _resource_list(reader: _Reader, node: yaml.Node, base: Path) -> list[Path]:
    # The docs show ``resourcesPaths: a,b`` as well as a list; take both.
    if isinstance(node, yaml.ScalarNode):
        parts = [(p.strip(), node) for p in reader.text(node, "resourcesPaths").split(",")]
        entries = [(p, n) for p, n in parts if p]
    else:
        entries = reader.strings(node, "resourcesPaths")
    return [_existing(reader, n, "resourcesPaths", raw, base) for raw, n in entries]


def _env(reader: _Reader, node: yaml.Node) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, (key_node, value) in reader.mapping(node, "env").items():
        if not name or "=" in name or "\x00" in name:
            raise reader.fail(key_node, f"env: invalid variable name {name!r}")
        env[name] = "" if reader.is_null(value) else reader.text(value, f"env.{name}")
    return env


# --- apps --------------------------------------------------------------------------------------


def _port(reader: _Reader, node: yaml.Node, key: str) -> int:
    port = reader.integer(node, key)
    if port > 65535:
        raise reader.fail(node, f"{key} {port} is not a port (0-65535)")
    return port


def _mcp_server(reader: _Reader, node: yaml.Node) -> dict[str, str] | None:
    if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL:
        return {"path": DEFAULT_MCP_PATH} if reader.boolean(node, "mcpServer") else None
    if not isinstance(node, yaml.MappingNode):
        raise reader.fail(node, "mcpServer must be true, false or {path: /mcp}")
    items = reader.mapping(node, "mcpServer")
    for key, (key_node, _) in items.items():
        if key != "path":
            raise reader.fail(key_node, f"mcpServer: unknown key {key!r} (known: path)")
    path = DEFAULT_MCP_PATH
    if "path" in items:
        value = items["path"][1]
        path = reader.text(value, "mcpServer.path")
        if not path.startswith("/") or any(c in path for c in "?#\\\x00") or "//" in path:
            raise reader.fail(value, f"mcpServer.path {path!r} must be an absolute URL path")
    return {"path": path}


def _read_app(
    reader: _Reader,
    node: yaml.Node,
    index: int,
    base: Path,
    common: _Shared,
    ignored: list[str],
) -> AppSpec:
    from identity import IdentityError, validate_app_id

    items = reader.mapping(node, f"apps[{index}]")
    for key, (key_node, _) in items.items():
        if key in APP_IGNORED:
            ignored.append(f"{reader.source}:{key_node.start_mark.line + 1}: {key}")
        elif key not in APP_USED and key not in SHARED_USED and key not in SHARED_IGNORED:
            raise reader.fail(key_node, f"apps[{index}]: unknown key {key!r}")

    def get(key: str) -> yaml.Node | None:
        found = items.get(key)
        return None if found is None or reader.is_null(found[1]) else found[1]

    dir_node = get("appDirPath")
    if dir_node is None or reader.text(dir_node, "appDirPath") == "":
        raise reader.fail(node, f"apps[{index}]: appDirPath is required")
    app_dir = _existing(reader, dir_node, "appDirPath", reader.text(dir_node, "appDirPath"), base)
    if not app_dir.is_dir():
        raise reader.fail(dir_node, f"appDirPath {app_dir} is not a directory")

    id_node = get("appID")
    app_id = reader.text(id_node, "appID") if id_node is not None else app_dir.name
    try:
        validate_app_id(app_id)
    except IdentityError as exc:
        where = id_node if id_node is not None else dir_node
        hint = "" if id_node is not None else " (from appDirPath's name; set appID)"
        raise reader.fail(where, f"{exc}{hint}") from None

    own = _read_shared(reader, items, app_dir, ignored)
    config_file = own.config_file
    if config_file is None and (app_dir / ".dapr" / "config.yaml").is_file():
        config_file = app_dir / ".dapr" / "config.yaml"
    if config_file is None:
        config_file = common.config_file
    resources = own.resources
    if resources is None and (app_dir / ".dapr" / "resources").is_dir():
        resources = [app_dir / ".dapr" / "resources"]
    if resources is None:
        resources = common.resources or []

    command: tuple[str, ...] = ()
    command_node = get("command")
    if command_node is not None:
        if isinstance(command_node, yaml.ScalarNode):
            raise reader.fail(
                command_node,
                'command must be a list (argv), e.g. ["python3", "app.py"]; '
                "trustmesh runs no shell",
            )
        command = tuple(arg for arg, _ in reader.strings(command_node, "command"))

    channel = get("appChannelAddress")
    if channel is not None and reader.text(channel, "appChannelAddress") not in (
        "127.0.0.1",
        "localhost",
    ):
        raise reader.fail(
            channel, "appChannelAddress must be 127.0.0.1: the sidecar reaches the app on loopback"
        )
    if get("unixDomainSocket") is not None:
        raise reader.fail(
            items["unixDomainSocket"][0], "unixDomainSocket is not supported: sidecars use TCP"
        )

    app_port = None
    if (port_node := get("appPort")) is not None:
        value = _port(reader, port_node, "appPort")
        app_port = value if value >= 0 else None
    http_port = None
    if (port_node := get("daprHTTPPort")) is not None:
        value = _port(reader, port_node, "daprHTTPPort")
        http_port = value if value > 0 else None
    mcp = _mcp_server(reader, items["mcpServer"][1]) if "mcpServer" in items else None

    def pick(mine, shared, default):
        return mine if mine is not None else shared if shared is not None else default

    return AppSpec(
        app_id=app_id,
        app_dir=app_dir,
        line=node.start_mark.line + 1,
        command=command,
        app_port=app_port,
        http_port=http_port,
        env={**common.env, **own.env},
        config_file=config_file,
        resources_paths=tuple(resources),
        log_level=pick(own.log_level, common.log_level, "info"),
        health_check=pick(own.health_check, common.health_check, False),
        health_check_path=pick(own.health_check_path, common.health_check_path, "/healthz"),
        mcp_server=mcp,
        app_log_destination=pick(own.app_log, common.app_log, "fileAndConsole"),
        sidecar_log_destination=pick(own.sidecar_log, common.sidecar_log, "console"),
        user=pick(own.user, common.user, None),
    )


# --- the template ------------------------------------------------------------------------------


def parse_run_file(text: str, path: Path) -> RunFile:
    """Parse the template ``text`` read from ``path`` (paths resolve against its directory)."""
    path = Path(os.path.normpath(Path(path).absolute()))
    source = str(path)
    reader = _Reader(source)
    try:
        root = yaml_loader.compose(text)
    except yaml.composer.ComposerError as exc:
        raise RunFileError(f"{source}: a run file holds one YAML document") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RunFileError(f"{source}:{where} not valid YAML: {problem}") from None
    if root is None:
        raise RunFileError(f"{source}:1: the run file is empty")
    top = reader.mapping(root, "the run file")
    for key, (key_node, _) in top.items():
        if key not in TOP_LEVEL:
            raise reader.fail(key_node, f"unknown key {key!r} (known: {', '.join(TOP_LEVEL)})")

    if "version" not in top or reader.is_null(top["version"][1]):
        raise reader.fail(root, "version is required (e.g. 'version: 1')")
    version = reader.integer(top["version"][1], "version")
    if version == 0:
        raise reader.fail(top["version"][1], "version must not be 0")
    name = None
    if "name" in top and not reader.is_null(top["name"][1]):
        name = reader.text(top["name"][1], "name")

    base = path.parent
    ignored: list[str] = []
    common = _Shared()
    if "common" in top and not reader.is_null(top["common"][1]):
        items = reader.mapping(top["common"][1], "common")
        for key, (key_node, _) in items.items():
            if key not in SHARED_USED and key not in SHARED_IGNORED:
                hint = " (a per-app key: set it under apps[])" if key in APP_USED else ""
                raise reader.fail(key_node, f"common: unknown key {key!r}{hint}")
        common = _read_shared(reader, items, base, ignored)

    if "apps" not in top or reader.is_null(top["apps"][1]):
        raise reader.fail(root, "apps is required: list at least one app")
    apps_node = top["apps"][1]
    if not isinstance(apps_node, yaml.SequenceNode) or not apps_node.value:
        raise reader.fail(apps_node, "apps must be a non-empty list")
    apps = [
        _read_app(reader, node, index, base, common, ignored)
        for index, node in enumerate(apps_node.value)
    ]
    _check_unique(source, apps)
    return RunFile(path, version, name, tuple(apps), tuple(ignored))


def _check_unique(source: str, apps: list[AppSpec]) -> None:
    seen: dict[Any, int] = {}
    checks: list[tuple[str, Callable[[AppSpec], Any]]] = [
        ("appID", lambda a: a.app_id),
        ("appPort", lambda a: a.app_port or None),
        ("daprHTTPPort", lambda a: a.http_port),
    ]
    ports: dict[int, tuple[int, str]] = {}
    for app in apps:
        key = ("appID", app.app_id)
        if key in seen:
            raise RunFileError(
                f"{source}:{app.line}: appID {app.app_id!r} is used twice "
                f"(first at line {seen[key]})"
            )
        seen[key] = app.line
        for label, getter in checks[1:]:
            port = getter(app)
            if port is None:
                continue
            if port in ports:
                first_line, first_label = ports[port]
                raise RunFileError(
                    f"{source}:{app.line}: {label} {port} is already the {first_label} of the "
                    f"app at line {first_line}"
                )
            ports[port] = (app.line, label)


def resolve_run_file_path(raw: str | os.PathLike[str]) -> Path:
    """``-f FILE`` or ``-f DIR`` (meaning ``DIR/dapr.yaml``, as Dapr), absolute."""
    path = Path(os.path.expanduser(os.fspath(raw))).absolute()
    if path.is_dir():
        path = path / DEFAULT_FILE_NAME
    return Path(os.path.normpath(path))


def load_run_file(raw: str | os.PathLike[str]) -> RunFile:
    path = resolve_run_file_path(raw)
    try:
        text = yaml_loader.read_text(path)
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such run file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RunFileError(f"{path}: cannot read: {reason}") from None
    return parse_run_file(text, path)


def single_app_run(
    app_id: str,
    command: tuple[str, ...],
    *,
    app_dir: Path,
    app_port: int | None = None,
    http_port: int | None = None,
    mcp_path: str | None = None,
    user: str | None = None,
    log_level: str = "info",
) -> RunFile:
    """``trustmesh run --app-id ID [--app-port P] [--mcp-server] -- CMD…`` (Dapr's ``dapr run``).

    One app in ``app_dir`` (the current directory), as a one-app template would describe it;
    errors name the flags. The run is recorded under ``<app_dir>/<app-id>`` (no such file is
    written), so two single-app runs of one App ID from one directory are one run.
    """
    from identity import IdentityError, validate_app_id

    try:
        validate_app_id(app_id)
    except IdentityError as exc:
        raise RunFileError(f"--app-id: {exc}") from None
    if mcp_path is not None and (not mcp_path.startswith("/") or "//" in mcp_path):
        raise RunFileError(f"--mcp-path {mcp_path!r} must be an absolute URL path")
    app_dir = Path(os.path.normpath(Path(app_dir).absolute()))
    spec = AppSpec(
        app_id=app_id,
        app_dir=app_dir,
        line=0,
        command=tuple(command),
        app_port=app_port,
        http_port=http_port or None,
        mcp_server={"path": mcp_path} if mcp_path is not None else None,
        user=user,
        log_level=LOG_LEVELS[log_level],
        port_labels=("--app-port", "--dapr-http-port"),
    )
    return RunFile(app_dir / app_id, 1, app_id, (spec,))
