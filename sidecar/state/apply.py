"""Validating and storing resource documents: one path for ``trustmesh apply`` and the runner.

Every document is validated before any is written, and all are written in one store change
(one version), so a refused apply changes nothing and an accepted one is seen whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ResourceInvalid
from .documents import Document, DocumentError, load_documents, read_file
from .store import KIND_DIRS, AppBinding, MeshStore


def validators() -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    from ..bearer.config import parse_bearer_component
    from ..identity_source import parse_binding_resource
    from ..mcp.registration import check_policy_document
    from ..policy.configuration import parse_configuration

    return {
        "Configuration": parse_configuration,
        "Component": parse_bearer_component,
        "MCPServerAccessPolicy": check_policy_document,
        "AppIdentityBinding": parse_binding_resource,
    }


def read_documents(
    paths: Iterable[Path | str], *, skipped: list[str] | None = None
) -> list[Document]:
    """Load and validate every document in ``paths`` (files, or directories of *.yaml).

    With a ``skipped`` list, Dapr Components that are not middleware (state stores, pub/sub…:
    a Dapr resources folder holds them, and they mean nothing to trustmesh) are left out and
    named there. Middleware of a type we do not implement is always refused: it might be
    attached to a pipeline, and skipping a security layer would fail open.
    """
    checks = validators()
    accepted: list[Document] = []
    for path in _expand(paths):
        for document in load_documents(read_file(path), str(path)):
            if skipped is not None and _foreign_component(document):
                skipped.append(f"{path}:{document.line}: component {document.name!r}")
                continue
            check = checks.get(document.kind)
            if check is None:
                raise DocumentError(
                    f"{path}:{document.line}: unsupported kind {document.kind!r} "
                    f"(supported: {', '.join(KIND_DIRS)})"
                )
            try:
                check(document.body)
            except ResourceInvalid as exc:
                raise document.error(exc) from None
            accepted.append(document)
    return accepted


def _foreign_component(document: Document) -> bool:
    spec = document.body.get("spec")
    kind = spec.get("type") if isinstance(spec, dict) else None
    return (
        document.kind == "Component"
        and isinstance(kind, str)
        and not kind.startswith("middleware.")
    )


def _expand(paths: Iterable[Path | str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            out.append(path)
    return out


def store_documents(
    store: MeshStore,
    documents: list[Document],
    bindings: Iterable[AppBinding] = (),
    *,
    replaced: dict[tuple[str, str], int] | None = None,
) -> int | None:
    """Write validated documents (and App ID bindings) as one change; return its version.

    An MCP policy's server is registered in the same change when it is not yet (never a policy
    on disk that no sidecar enforces). With a ``replaced`` dict, each (kind, name) that already
    existed is recorded there with the version it replaced (0 for a copy the store did not
    write), for the caller to report.
    """
    from ..mcp.registration import servers_to_register

    bindings = list(bindings)
    bindings += servers_to_register(documents, [*store.bindings(), *bindings])
    with store.change() as change:
        for document in documents:
            change.put(document.kind, document.name, document.body)
        for binding in bindings:
            change.put_binding(binding)
    if replaced is not None:
        replaced.update(change.replaced)
    return change.generation
