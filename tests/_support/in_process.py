"""Sidecars run inside the test's own trio run, the audit records they write, and waiting
for a sidecar to put a new policy in force.

In-process sidecars (``run_sidecar`` in the test's nursery) let a test reach a proxy's judge or
its server to break or drain it; their records land in the mesh home's audit directory as a
real sidecar's do, flushed within ~100 ms of the exchange's end.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from sidecar.audit import AuditSettings
from sidecar.runtime import SidecarOptions


def sidecar_options(mesh, app_id: str, app_port: int | None, **extra) -> SidecarOptions:
    """A sidecar for ``app_id`` in ``mesh`` (``tests.integration.conftest.Mesh``): port 0,
    its SVID directory, no signal handling, its audit log where ``last_record`` reads it."""
    return SidecarOptions(
        app_id=app_id,
        home=mesh.home,
        app_port=app_port,
        http_port=0,
        svid_dir=mesh.svid_dir(app_id),
        handle_signals=False,
        audit=AuditSettings(audit_path(mesh.home, app_id)),
        **extra,
    )


def audit_path(home: Path, app_id: str, namespace: str = "default") -> Path:
    return home / "audit" / f"{namespace}.{app_id}.jsonl"


def last_record(log: Path, path: str, timeout: float = 10.0) -> dict:
    """The last record in ``log`` of a request to ``path`` (the record's ``path`` field, e.g.
    ``sse-gated``), waiting for it to be written: an exchange is recorded when it ends."""
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text().splitlines() if log.exists() else []
        found = [r for r in map(json.loads, lines) if r.get("path") == path]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no record of {path!r} in {log}: {lines[-5:]}"
        time.sleep(0.05)


@contextmanager
def new_policy_in_force(sidecar, timeout: float = 20.0):
    """Around a policy change: on leaving, wait until ``sidecar`` (a started sidecar process)
    reports a policy version other than the one it had on entering. A sidecar cuts the
    exchanges a new policy refuses in the same step that puts it in force."""
    status = f"http://{sidecar.ready['admin']}/v1/status"
    before = httpx.get(status).json()["policy"]["version"]
    yield
    deadline = time.monotonic() + timeout
    while httpx.get(status).json()["policy"]["version"] == before:
        assert time.monotonic() < deadline, "the new policy never took effect"
        time.sleep(0.05)
