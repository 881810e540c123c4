"""Making the state directory ready for a run: the CA, the run's documents, bindings, tokens.

All of it is synchronous file work done before (or between) process starts. Documents go
through the same path as ``trustmesh apply`` (:func:`read_documents` validates everything,
:func:`store_documents` writes one versioned change), so a refused run file changes nothing.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import yaml

from ca import CAError, CertificateAuthority, root_trust_domain
from ca.home import ca_layout
from ca.store import ca_exists, load_bundle, save_ca
from ca.tokens import TokenStore
from identity import DEFAULT_NAMESPACE, DEFAULT_TRUST_DOMAIN, AppIdentity, IdentityError

from ..errors import SidecarError
from ..mcp import MCPServerAccessPolicy, to_document
from ..state.apply import read_documents, store_documents
from ..state.documents import Document, load_documents
from ..state.store import AppBinding, MeshStore
from .errors import RunnerError
from .runfile import AppSpec, RunFile

JOIN_TOKEN_TTL = dt.timedelta(minutes=5)
POLICY_KIND = "MCPServerAccessPolicy"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ensure_ca(home: Path) -> tuple[str, bool]:
    """The CA's trust domain, creating the CA (``ca init`` defaults) if there is none.

    Returns ``(trust_domain, created)``.
    """
    layout = ca_layout(home, create=True)
    created = False
    try:
        if not ca_exists(layout):
            save_ca(layout, CertificateAuthority.create(DEFAULT_TRUST_DOMAIN, now=_now()))
            created = True
        bundle = load_bundle(layout)
        return root_trust_domain(bundle.authorities[0]), created
    except (CAError, IdentityError) as exc:
        raise RunnerError(f"the CA in {layout.directory} cannot be used: {exc}") from exc


def mint_join_token(home: Path, trust_domain: str, app_id: str) -> str:
    """A one-time join token for ``app_id``, minted in-process (as ``ca token`` would)."""
    layout = ca_layout(home)
    identity = AppIdentity(trust_domain, DEFAULT_NAMESPACE, app_id)
    try:
        return TokenStore(layout).issue(identity, now=_now(), ttl=JOIN_TOKEN_TTL)
    except (CAError, IdentityError) as exc:
        raise RunnerError(f"cannot mint a join token for {app_id!r}: {exc}") from exc


def _configuration_name(app: AppSpec, documents: list[Document]) -> str:
    configurations = [d for d in documents if d.kind == "Configuration"]
    if len(configurations) != 1:
        found = f"{len(configurations)} Configuration documents" if configurations else "none"
        raise RunnerError(
            f"configFilePath of app {app.app_id!r} ({app.config_file}) must hold exactly one "
            f"Configuration document; found {found}"
        )
    if not configurations[0].name:
        raise RunnerError(f"{configurations[0].source}:{configurations[0].line}: no metadata.name")
    return configurations[0].name


def _add_unique(collected: dict[tuple[str, str], Document], documents: list[Document]) -> None:
    """Keep one document per (kind, name); two *different* ones with one name are refused,
    since the second would silently replace the first app's policy."""
    for document in documents:
        key = (document.kind, document.name)
        first = collected.get(key)
        if first is None:
            collected[key] = document
        elif first.body != document.body:
            raise RunnerError(
                f"{document.source}:{document.line}: {document.kind} {document.name!r} is also "
                f"defined, differently, at {first.source}:{first.line}; give each its own "
                "metadata.name"
            )


def _deny_all_document(app_id: str) -> Document:
    text = yaml.safe_dump(to_document(MCPServerAccessPolicy.deny_all(app_id)), sort_keys=False)
    return load_documents(text, f"<deny-all policy for {app_id}>")[0]


def apply_run_file(home: Path, run: RunFile, skipped: list[str] | None = None) -> int | None:
    """Store every app's documents and bindings as one change; return its version.

    Non-middleware Dapr components in resources folders are left out and named in ``skipped``.
    """
    store = MeshStore(home)
    collected: dict[tuple[str, str], Document] = {}
    bindings: list[AppBinding] = []
    try:
        for app in run.apps:
            paths = list(app.resources_paths)
            documents = read_documents(paths, skipped=skipped) if paths else []
            _add_unique(collected, documents)
            configuration = None
            if app.config_file is not None:
                config_documents = read_documents([app.config_file])
                configuration = _configuration_name(app, config_documents)
                _add_unique(collected, config_documents)
            if configuration is None and app.mcp_server is None:
                continue
            binding = store.binding(app.app_id, DEFAULT_NAMESPACE) or AppBinding(app.app_id)
            if configuration is not None:
                binding.configuration = configuration
            if app.mcp_server is not None:
                binding.mcp_server = dict(app.mcp_server)
            bindings.append(binding)
        for app in run.apps:
            # Grants made with 'mcpserver access grant' survive restarts: only a missing
            # policy gets the deny-all default.
            if app.mcp_server is None or (POLICY_KIND, app.app_id) in collected:
                continue
            if store.get(POLICY_KIND, app.app_id) is None:
                collected[(POLICY_KIND, app.app_id)] = _deny_all_document(app.app_id)
        if not collected and not bindings:
            return None
        return store_documents(store, list(collected.values()), bindings)
    except RunnerError:
        raise
    except (SidecarError, OSError, yaml.YAMLError) as exc:
        raise RunnerError(str(exc)) from exc
