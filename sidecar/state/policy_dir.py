"""``--policy-dir DIR``: read-only policy from a mounted ConfigMap, with no shared mesh directory.

Kubernetes mounts a ConfigMap as a directory that kubelet updates atomically (its AtomicWriter):
the files live in a hidden timestamped directory ``..2026_12_05_10_00_00.123``, a symlink
``..data`` points at it, and each key is a symlink ``<key> -> ..data/<key>``. An update writes
a *new* timestamped directory, points ``..data_tmp`` at it, renames that over ``..data`` (one
atomic step) and then deletes the old directory. So:

* the signature is where ``..data`` points: one ``readlink`` per poll, and any swap changes it;
* a snapshot resolves ``..data`` once and reads every file from that one directory — never
  through the per-key symlinks, which follow ``..data`` and could straddle a swap — then reads
  ``..data`` again. Kubelet deletes a set's directory only after swapping ``..data`` away from it,
  so if the link did not move, the directory was whole for the entire read; if it moved, the read
  may have met a half-deleted directory and is abandoned as busy, to be retried on the new set;
* a set that does not parse or validate as a whole is refused and the watcher keeps the last good
  policy (``sidecar/state/watcher.py`` does that for any store); no resource of a broken set is
  used, because which part is broken is exactly what one cannot trust.

A plain directory (no ``..data``: a test, a hostPath) works too, signed by its files' stats.

Each ``*.yaml``/``*.yml`` key holds one or more documents: ``Configuration``, ``Component``
(middleware; other Dapr components are skipped as ``trustmesh apply`` skips them),
``MCPServerAccessPolicy``, ``AppIdentityBinding``, and ``AppID`` — the App ID binding that
``trustmesh appid update`` writes into a home, here as a resource::

    apiVersion: trustmesh.dev/v1alpha1
    kind: AppID
    metadata: {name: mcp-server, namespace: default}
    spec: {configuration: mcp-server-allow, mcpServer: {path: /mcp}}

The version a sidecar reports is the set's ``generation`` key when it has one (``trustmesh k8s
render`` writes the home's store generation), else a number derived from the set's content.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ResourceInvalid
from .apply import _foreign_component, validators
from .documents import Document, DocumentError, load_documents
from .store import AppBinding, Snapshot, StoreBusy, StoreError

DATA_LINK = "..data"
APP_ID_KIND = "AppID"
GENERATION_KEY = "generation"
_SUFFIXES = (".yaml", ".yml")


class PolicyDirError(StoreError):
    code = "ERR_POLICY_DIR"


def _app_binding(document: Document) -> AppBinding:
    body = document.body
    metadata = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
    spec = body.get("spec", {})
    if not isinstance(spec, Mapping):
        raise document.error(ResourceInvalid("must be a mapping", "spec"))
    unknown = set(spec) - {"configuration", "mcpServer"}
    if unknown:
        raise document.error(ResourceInvalid(f"unknown field(s) {sorted(unknown)}", "spec"))
    configuration = spec.get("configuration")
    if configuration is not None and not isinstance(configuration, str):
        raise document.error(ResourceInvalid("must be a string", "spec.configuration"))
    mcp_server = spec.get("mcpServer")
    if mcp_server is not None and not isinstance(mcp_server, Mapping):
        raise document.error(ResourceInvalid("must be a mapping", "spec.mcpServer"))
    if not document.name:
        raise document.error(ResourceInvalid("is required (the App ID)", "metadata.name"))
    return AppBinding(
        app_id=document.name,
        namespace=str(metadata.get("namespace") or "default"),
        configuration=configuration,
        mcp_server=dict(mcp_server) if mcp_server is not None else None,
    )


class PolicyDirStore:
    """The reading half of :class:`~sidecar.state.store.MeshStore`, over a ConfigMap mount."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def _data_link(self) -> str | None:
        try:
            return os.readlink(self.directory / DATA_LINK)
        except FileNotFoundError:
            return None
        except OSError as exc:  # ..data exists but is no symlink: not a kubelet mount
            raise PolicyDirError(f"{self.directory / DATA_LINK} is not a symlink") from exc

    def signature(self) -> tuple:
        with contextlib.suppress(OSError):
            return ("data", os.readlink(self.directory / DATA_LINK))
        entries = []
        try:
            for path in sorted(self.directory.iterdir()):
                try:
                    st = path.stat()
                except OSError as exc:  # gone, looping, unreadable: the load decides, in its
                    entries.append((path.name, "unreadable", exc.errno))  # thread; never here
                    continue
                entries.append((path.name, st.st_mtime_ns, st.st_size, st.st_ino))
        except FileNotFoundError:
            return ("missing",)
        except OSError as exc:
            return ("unreadable", exc.errno)
        return ("plain", *entries)

    def generation(self) -> int:
        return self.snapshot("", "").generation

    def snapshot(self, app_id: str, namespace: str, *, blocking: bool = True) -> Snapshot:
        link = self._data_link()
        if link is None and not self.directory.is_dir():
            raise PolicyDirError(f"policy directory {self.directory} does not exist")
        data_dir = self.directory if link is None else self.directory / link
        try:
            files = sorted(
                p
                for p in data_dir.iterdir()
                if p.suffix in _SUFFIXES and not p.name.startswith(".")
            )
            texts = [(path, path.read_text(encoding="utf-8")) for path in files]
            generation_text = _read_optional(data_dir / GENERATION_KEY)
        except FileNotFoundError as exc:
            raise self._missing(link, data_dir, exc) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyDirError(f"cannot read policy directory {data_dir}: {exc}") from exc
        if link is not None and self._data_link() != link:
            raise StoreBusy(f"policy set {link} was replaced while being read")
        return self._parse(texts, generation_text, app_id, namespace)

    def _missing(self, link: str | None, data_dir: Path, exc: FileNotFoundError) -> StoreError:
        """What a file that was not there means: busy only if a writer can explain it.

        kubelet deletes a set only after pointing ``..data`` elsewhere, so a missing file under
        a link that moved means a newer set is already in place (busy: read that one). In a
        plain directory, a file listed and then gone was removed meanwhile (busy too: the next
        listing will not have it). But a dangling symlink, or ``..data`` naming no directory,
        stays that way however often one reads it: that is a broken set, refused by name, or
        the watcher would retry it forever.
        """
        if link is not None and self._data_link() != link:
            return StoreBusy(f"policy set {link} was replaced while being read")
        if link is not None and not data_dir.is_dir():
            return PolicyDirError(
                f"{self.directory / DATA_LINK} points at {link}, which is not a directory"
            )
        path = Path(exc.filename) if exc.filename else data_dir
        try:
            target = os.readlink(path)
        except OSError:  # no symlink (any more): removed by whoever is changing the directory
            return StoreBusy(f"{path} was removed while being read")
        return PolicyDirError(f"{path} is a symlink to {target}, which does not exist")

    def _parse(
        self,
        texts: list[tuple[Path, str]],
        generation_text: str | None,
        app_id: str,
        namespace: str,
    ) -> Snapshot:
        checks = validators()
        resources: dict[tuple[str, str], dict[str, Any]] = {}
        bindings: dict[tuple[str, str], AppBinding] = {}
        for path, text in texts:
            source = f"{self.directory.name}/{path.name}"
            for document in load_documents(text, source):
                if document.kind == APP_ID_KIND:
                    binding = _app_binding(document)
                    key = (binding.app_id, binding.namespace)
                    if key in bindings:
                        raise DocumentError(f"{source}:{document.line}: AppID {key} given twice")
                    bindings[key] = binding
                    continue
                if _foreign_component(document):
                    continue  # a Dapr state store or pub/sub: nothing to enforce
                check = checks.get(document.kind)
                if check is None:
                    raise DocumentError(
                        f"{source}:{document.line}: unsupported kind {document.kind!r}"
                    )
                try:
                    check(document.body)
                except ResourceInvalid as exc:
                    raise document.error(exc) from None
                key = (document.kind, document.name)
                if key in resources:
                    raise DocumentError(f"{source}:{document.line}: {key} given twice")
                resources[key] = document.body
        return Snapshot(
            _generation(generation_text, texts), bindings.get((app_id, namespace)), resources
        )


def _read_optional(path: Path) -> str | None:
    """The file's text, or None when there is no such file (a dangling symlink is not "no
    file": it raises, and the snapshot refuses it by name)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path.is_symlink():
            raise
        return None


def _generation(text: str | None, texts: list[tuple[Path, str]]) -> int:
    if text is not None:
        try:
            return int(text.strip())
        except ValueError:
            raise PolicyDirError(f"the {GENERATION_KEY!r} key is not an integer") from None
    digest = hashlib.sha256()
    for path, body in texts:
        digest.update(path.name.encode() + b"\0" + body.encode() + b"\0")
    return int.from_bytes(digest.digest()[:6], "big")
