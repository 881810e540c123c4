"""The mesh store: resources and App ID bindings under ``<home>/resources``.

Layout (YAML, 0600, written with write + rename)::

    resources/generation                      the store version: +1 per committed change
    resources/configurations/<name>.yaml      Dapr Configuration
    resources/components/<name>.yaml          Dapr Component (middleware.http.bearer)
    resources/mcpserverpolicies/<name>.yaml   MCPServerAccessPolicy
    resources/appids/<namespace>/<app-id>.yaml  binding: configuration, MCP server registration

Writers take an exclusive ``flock`` for the whole change and bump the generation once at the
end; readers take a shared lock for the whole read. So a sidecar never sees half of a multi-file
``apply``: it sees the store before the change or after it. The generation is what sidecars
report as the version they enforce, and what ``--wait`` waits for. Each resource file opens
with ``# trustmesh: version N``, the version that wrote it, so a replacement can name it.

Only writers create the home (0700) and this directory: reading a mesh that does not exist yet
reads it empty. Files are read with :mod:`.yaml_loader` (no anchors, bounded size), and written
without anchors, so the store always reads back what it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ca import CAStorageError
from ca.home import ensure_private_dir
from identity import atomic_write

from ..errors import SidecarError
from . import yaml_loader

KIND_DIRS = {
    "Configuration": "configurations",
    "Component": "components",
    "MCPServerAccessPolicy": "mcpserverpolicies",
    "AppIdentityBinding": "appidentitybindings",  # SPIFFE ID → App ID (identity map)
}


class StoreError(SidecarError):
    code = "ERR_STORE"


class StoreBusy(StoreError):
    """A writer holds the lock; try again shortly."""


@dataclass
class AppBinding:
    app_id: str
    namespace: str = "default"
    configuration: str | None = None
    mcp_server: dict[str, Any] | None = None  # {"path": "/mcp"} when registered as an MCP server

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"appId": self.app_id, "namespace": self.namespace}
        if self.configuration:
            doc["configuration"] = self.configuration
        if self.mcp_server is not None:
            doc["mcpServer"] = self.mcp_server
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any], source: Path | str = "binding") -> AppBinding:
        """Read a binding file; a hand-edited one with a wrong field is a StoreError naming it."""
        app_id, namespace = doc.get("appId"), doc.get("namespace", "default")
        configuration, mcp_server = doc.get("configuration"), doc.get("mcpServer")
        if not isinstance(app_id, str) or not app_id:
            raise StoreError(f"{source}: appId must be a non-empty string")
        if not isinstance(namespace, str):
            raise StoreError(f"{source}: namespace must be a string")
        if configuration is not None and not isinstance(configuration, str):
            raise StoreError(f"{source}: configuration must be a name")
        if mcp_server is not None and not isinstance(mcp_server, dict):
            raise StoreError(f"{source}: mcpServer must be a mapping such as {{path: /mcp}}")
        return cls(app_id, namespace, configuration, mcp_server)


@dataclass
class Snapshot:
    """Everything one sidecar needs, read under one shared lock."""

    generation: int
    binding: AppBinding | None
    resources: dict[tuple[str, str], dict[str, Any] | StoreError] = field(default_factory=dict)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The document, or None; a file that did not read raises only for whoever needs it,
        so one broken resource cannot stop sidecars that never use it."""
        value = self.resources.get((kind, name))
        if isinstance(value, StoreError):
            raise value
        return value


class _PlainDumper(yaml.SafeDumper):
    """Writes a value shared by two fields out twice: the store's reader refuses anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


# Each resource file starts with the store version that last wrote it, so a command replacing
# it can say which version it replaced. A comment, so the document itself stays the user's.
_VERSION_HEADER = re.compile(rb"# trustmesh: version (\d+)\n")


def _dump(doc: dict[str, Any], version: int | None = None) -> bytes:
    text = yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False).encode()
    return text if version is None else b"# trustmesh: version %d\n" % version + text


def written_version(path: Path) -> int | None:
    """The store version that last wrote ``path``; 0 for a file written some other way; None
    when there is no such file."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(64)
    except FileNotFoundError:
        return None
    except OSError:
        return 0
    match = _VERSION_HEADER.fullmatch(first)
    return int(match.group(1)) if match else 0


class MeshStore:
    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.root = self.home / "resources"

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, kind: int) -> Iterator[None]:
        """Hold the store lock; only a writer creates the home and the store directory.

        A reader of a store that does not exist yet reads it empty without creating anything
        (a writer creating it meanwhile publishes its files with its generation, all at once).
        """
        if not kind & fcntl.LOCK_EX and not self.root.is_dir():
            yield
            return
        try:
            ensure_private_dir(self.home)
            self.root.mkdir(exist_ok=True, mode=0o700)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except CAStorageError as exc:
            raise StoreError(f"cannot write the mesh home: {exc}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StoreError(f"cannot write the mesh home {self.home}: {reason}") from None
        try:
            try:
                fcntl.flock(fd, kind)
            except BlockingIOError:
                raise StoreBusy("the mesh store is being written") from None
            yield
        finally:
            os.close(fd)

    # -- reading -----------------------------------------------------------------------------
    def generation(self) -> int:
        try:
            return int((self.root / "generation").read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise StoreError(f"corrupt store generation file: {exc}") from exc

    def path(self, kind: str, name: str) -> Path:
        try:
            return self.root / KIND_DIRS[kind] / f"{name}.yaml"
        except KeyError:
            raise StoreError(f"unknown resource kind {kind!r}") from None

    def binding_path(self, app_id: str, namespace: str) -> Path:
        return self.root / "appids" / namespace / f"{app_id}.yaml"

    def _read_yaml(self, path: Path) -> dict[str, Any] | None:
        """The document in ``path``, or None when there is no such file. A dangling symlink is
        not "no such file": read as absent, the resource would silently drop out of the
        policy (or a binding out of the identity map), so it is an error naming the file."""
        try:
            data = yaml_loader.safe_load(yaml_loader.read_text(path))
        except FileNotFoundError:
            try:
                target = os.readlink(path)
            except OSError:
                return None
            raise StoreError(f"{path} is a symlink to {target}, which does not exist") from None
        except yaml_loader.FileUnreadable as exc:
            raise StoreError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            line, problem = yaml_loader.problem_text(exc)
            where = f":{line}" if line is not None else ""
            raise StoreError(f"{path}{where}: {problem}") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path} does not hold a mapping")
        return data

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self._read_yaml(self.path(kind, name))

    def names(self, kind: str) -> list[str]:
        directory = self.root / KIND_DIRS[kind]
        return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []

    def binding(self, app_id: str, namespace: str) -> AppBinding | None:
        path = self.binding_path(app_id, namespace)
        doc = self._read_yaml(path)
        return AppBinding.from_document(doc, path) if doc is not None else None

    def bindings(self) -> list[AppBinding]:
        directory = self.root / "appids"
        if not directory.is_dir():
            return []
        return [
            AppBinding.from_document(self._read_yaml(path) or {}, path)
            for path in sorted(directory.glob("*/*.yaml"))
        ]

    def snapshot(self, app_id: str, namespace: str, *, blocking: bool = True) -> Snapshot:
        """All resources plus this app's binding, read under a shared lock."""
        flags = fcntl.LOCK_SH if blocking else fcntl.LOCK_SH | fcntl.LOCK_NB
        with self._lock(flags):
            snap = Snapshot(self.generation(), self.binding(app_id, namespace))
            for kind, directory in KIND_DIRS.items():
                for path in _yaml_paths(self.root / directory):
                    try:
                        doc = self._read_yaml(path)
                    except StoreError as exc:  # names the file (and line)
                        snap.resources[(kind, path.stem)] = exc
                        continue
                    if doc is not None:
                        snap.resources[(kind, path.stem)] = doc
            return snap

    def signature(self) -> tuple:
        """Cheap change detector: the stat of the generation file and of every resource file a
        snapshot reads (also a file edited by hand). Sidecars call it several times a second,
        on their event loop, so it lists directories with ``os.scandir``: no ``Path`` objects."""
        entries: list[tuple] = []
        root = str(self.root)
        for directory in KIND_DIRS.values():
            _stat_yaml_files(os.path.join(root, directory), entries)
        for namespace in _subdirectories(os.path.join(root, "appids"), entries):
            _stat_yaml_files(namespace, entries)
        _stat(os.path.join(root, "generation"), entries)
        return tuple(entries)

    # -- writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """One atomic change: everything written inside becomes visible with one new version."""
        with self._lock(fcntl.LOCK_EX):
            change = Change(self)
            try:
                yield change
            except OSError as exc:
                reason = exc.strerror or str(exc)
                name = f" {exc.filename}" if exc.filename else ""
                raise StoreError(f"cannot write{name} in the mesh home: {reason}") from None
            if change.touched:
                change.generation = change.next_generation
                atomic_write(self.root / "generation", f"{change.generation}\n".encode(), 0o600)


class Change:
    def __init__(self, store: MeshStore) -> None:
        self.store = store
        self.touched = False
        self.generation: int | None = None
        self.next_generation = store.generation() + 1  # read under the writer's lock
        # (kind, name) -> the version a put replaced (0: a copy not written by the store)
        self.replaced: dict[tuple[str, str], int] = {}

    def put(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        path = self.store.path(kind, name)
        previous = written_version(path)
        if previous is not None:
            self.replaced.setdefault((kind, name), previous)
        atomic_write(path, _dump(doc, self.next_generation), mode=0o600)
        self.touched = True

    def delete(self, kind: str, name: str) -> bool:
        try:
            self.store.path(kind, name).unlink()
        except FileNotFoundError:
            return False
        self.touched = True
        return True

    def put_binding(self, binding: AppBinding) -> None:
        path = self.store.binding_path(binding.app_id, binding.namespace)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, _dump(binding.to_document()), mode=0o600)
        self.touched = True


# The signature never raises: a directory or file it cannot list or stat (another user's 0700
# directory, a symlink loop) is an entry of its own, so the watcher's load runs (in its thread)
# and refuses the store, keeping the last good policy, instead of the poll killing the sidecar.


def _subdirectories(directory: str, entries: list[tuple]) -> list[str]:
    try:
        with os.scandir(directory) as listing:
            return sorted(entry.path for entry in listing if entry.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        entries.append((directory, "unreadable", exc.errno))
        return []


def _stat_yaml_files(directory: str, entries: list[tuple]) -> None:
    """Append (path, mtime, size, inode, ctime) of each ``*.yaml`` in ``directory``, by name."""
    try:
        with os.scandir(directory) as listing:
            paths = sorted(entry.path for entry in listing if entry.name.endswith(".yaml"))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        entries.append((directory, "unreadable", exc.errno))
        return
    for path in paths:
        _stat(path, entries)


def _stat(path: str, entries: list[tuple]) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        entries.append((path, "unreadable", exc.errno))
        return
    # ctime too: a write that puts the old mtime back (`cp -p`, `rsync -t`) still moves it.
    entries.append((path, st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))


def _yaml_paths(directory: Path) -> list[Path]:
    """The ``*.yaml`` files a snapshot reads, in name order; none when the directory is absent.
    A directory that exists but cannot be listed is a broken store (``Path.glob`` would say
    "empty" and the resources in it would silently vanish from the policy)."""
    try:
        with os.scandir(directory) as listing:
            return sorted(Path(e.path) for e in listing if e.name.endswith(".yaml"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreError(f"{directory}: cannot be listed: {exc.strerror}") from None
