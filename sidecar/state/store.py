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
report as the version they enforce, and what ``--wait`` waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from identity import atomic_write

from ..errors import SidecarError
from . import yaml_loader

KIND_DIRS = {
    "Configuration": "configurations",
    "Component": "components",
    "MCPServerAccessPolicy": "mcpserverpolicies",
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
    def from_document(cls, doc: dict[str, Any]) -> AppBinding:
        return cls(
            app_id=str(doc["appId"]),
            namespace=str(doc.get("namespace", "default")),
            configuration=doc.get("configuration"),
            mcp_server=doc.get("mcpServer"),
        )


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


def _dump(doc: dict[str, Any]) -> bytes:
    return yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False).encode()


class MeshStore:
    def __init__(self, home: Path) -> None:
        self.root = Path(home) / "resources"

    # -- locking -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, kind: int) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
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
        try:
            data = yaml_loader.safe_load(yaml_loader.read_text(path))
        except FileNotFoundError:
            return None
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
        doc = self._read_yaml(self.binding_path(app_id, namespace))
        return AppBinding.from_document(doc) if doc is not None else None

    def bindings(self) -> list[AppBinding]:
        directory = self.root / "appids"
        if not directory.is_dir():
            return []
        return [
            AppBinding.from_document(self._read_yaml(path) or {})
            for path in sorted(directory.glob("*/*.yaml"))
        ]

    def snapshot(self, app_id: str, namespace: str, *, blocking: bool = True) -> Snapshot:
        """All resources plus this app's binding, read under a shared lock."""
        flags = fcntl.LOCK_SH if blocking else fcntl.LOCK_SH | fcntl.LOCK_NB
        with self._lock(flags):
            snap = Snapshot(self.generation(), self.binding(app_id, namespace))
            for kind, directory in KIND_DIRS.items():
                for path in sorted((self.root / directory).glob("*.yaml")):
                    try:
                        doc = self._read_yaml(path)
                    except StoreError as exc:  # names the file (and line)
                        snap.resources[(kind, path.stem)] = exc
                        continue
                    if doc is not None:
                        snap.resources[(kind, path.stem)] = doc
            return snap

    def signature(self) -> tuple:
        """Cheap change detector: the generation file and every resource file's stat."""
        entries = []
        for directory in (*KIND_DIRS.values(), "appids"):
            base = self.root / directory
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*.yaml")):
                with contextlib.suppress(FileNotFoundError):
                    st = path.stat()
                    entries.append((str(path), st.st_mtime_ns, st.st_size))
        with contextlib.suppress(FileNotFoundError):
            st = (self.root / "generation").stat()
            entries.append(("generation", st.st_mtime_ns, st.st_size))
        return tuple(entries)

    # -- writing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def change(self) -> Iterator[Change]:
        """One atomic change: everything written inside becomes visible with one new version."""
        with self._lock(fcntl.LOCK_EX):
            change = Change(self)
            yield change
            if change.touched:
                change.generation = self.generation() + 1
                atomic_write(self.root / "generation", f"{change.generation}\n".encode(), 0o600)


class Change:
    def __init__(self, store: MeshStore) -> None:
        self.store = store
        self.touched = False
        self.generation: int | None = None

    def put(self, kind: str, name: str, doc: dict[str, Any]) -> None:
        atomic_write(self.store.path(kind, name), _dump(doc), mode=0o600)
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
