"""Keeping a running sidecar's policy current without a restart.

Every quarter second the watcher compares a cheap signature of the store (file stats) with the
last one; on a change it reads a snapshot under the store's shared lock and builds a new policy.
A valid result is swapped in whole; an invalid one is logged and reported on ``/v1/status``
while the last good policy stays in force — a broken file never replaces a working policy. A
sidecar that has never had a valid policy denies everything (503) and says why.
"""

from __future__ import annotations

from pathlib import Path

import structlog
import trio
import yaml

from identity import AppIdentity

from ..errors import SidecarError
from ..pipeline import InboundPolicy
from .documents import DocumentError, load_documents
from .policy_builder import ConfigOverride, build_inbound_policy, deny_all_policy
from .store import MeshStore, StoreBusy

log = structlog.get_logger("trustmesh.policy")


class PolicyHolder:
    def __init__(self, initial: InboundPolicy) -> None:
        self.current = initial
        self.generation: int | None = None  # store generation the current policy came from
        self.error: str | None = None
        self.loads = 0

    def __call__(self) -> InboundPolicy:
        return self.current

    def status(self) -> dict:
        return {
            "version": self.current.version,
            "generation": self.generation,
            "sources": dict(self.current.sources),
            "error": self.error,
        }


def parse_config_option(value: str | None, store: MeshStore) -> ConfigOverride | None:
    """``--config NAME|FILE``: a path that exists is a file, anything else a store name."""
    if value is None:
        return None
    path = Path(value)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return ConfigOverride(source=str(path))
    return ConfigOverride(name=value)


def _with_file(override: ConfigOverride | None) -> ConfigOverride | None:
    if override is None or override.source is None:
        return override
    try:
        text = Path(override.source).read_text()
    except OSError as exc:
        raise DocumentError(f"cannot read {override.source}: {exc.strerror}") from exc
    documents = [d for d in load_documents(text, override.source) if d.kind == "Configuration"]
    if len(documents) != 1:
        raise DocumentError(f"{override.source}: expected exactly one Configuration document")
    return ConfigOverride(document=documents[0].body, source=override.source)


def _file_stat(override: ConfigOverride | None) -> tuple:
    if override is None or override.source is None:
        return ()
    try:
        st = Path(override.source).stat()
    except FileNotFoundError:
        return (None,)
    return (st.st_mtime_ns, st.st_size)


def load_policy(
    store: MeshStore, me: AppIdentity, override: ConfigOverride | None
) -> tuple[InboundPolicy, int]:
    snapshot = store.snapshot(me.app_id, me.namespace, blocking=False)
    return build_inbound_policy(snapshot, me, _with_file(override)), snapshot.generation


async def watch_policy(
    holder: PolicyHolder,
    store: MeshStore,
    me: AppIdentity,
    override: ConfigOverride | None,
    *,
    poll_interval: float = 0.25,
    on_policy=None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    signature = None
    started = False
    while True:
        current = (store.signature(), _file_stat(override))
        if current != signature:
            try:
                policy, generation = load_policy(store, me, override)
            except StoreBusy:
                await trio.sleep(0.02)  # a writer is mid-change; read once it is done
                continue
            except (SidecarError, OSError, ValueError, yaml.YAMLError) as exc:
                signature = current
                holder.error = str(exc)
                if holder.generation is None:
                    holder.current = deny_all_policy(str(exc))
                log.error("policy refused; keeping the last good one", error=str(exc))
            else:
                signature = current
                if on_policy is not None:
                    on_policy(policy)  # e.g. warm the bearer keys before the first request
                holder.current, holder.generation, holder.error = policy, generation, None
                holder.loads += 1
                log.info("policy applied", version=policy.version, sources=dict(policy.sources))
        if not started:
            started = True
            task_status.started()
        await trio.sleep(poll_interval)
