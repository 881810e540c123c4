"""Review of the audit chain: a log re-signed by *any* ServiceAccount identity of the namespace.

``trustmesh audit verify --app-id mcp-server`` must accept only a chain whose checkpoints are
signed by mcp-server's sidecar. The verifier accepts, for an expected ``/ns/<ns>/<app-id>``, any
owner that contains ``/ns/<ns>/sa/`` (``sidecar/audit/verify.py::_owned_by``), so whoever holds a
ServiceAccount SVID of that namespace — any pod under SPIRE or cert-manager — and can write the
file rewrites the whole trail (here: the first denial flipped to an allow), names itself as the
callee of every record, re-signs every checkpoint with its own key, and the verifier calls the
result mcp-server's intact log.

Twin: the untouched log verifies under ``--app-id mcp-server``; the same rewrite signed by the
sidecar's own key does too (test_audit_tamper), so only the owner check is at stake.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from identity import AppIdentity, SpiffeId
from tests._support.audit_mesh import MCP_SERVER, audit_world
from tests._support.mcp_mesh import TRUSTMESH
from tests._support.pki import utcnow
from tests._support.procs import REPO
from tests.security.test_audit_tamper import _encode, _write, rechain

pytestmark = pytest.mark.e2e

INTRUDER_SA = SpiffeId.from_parts("public", "ns", "default", "sa", "intruder")


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    with audit_world(tmp_path_factory.mktemp("audit-owner"), mesh_ca) as world:
        yield world


def verify_as_home(world, home, *extra: str):
    return subprocess.run(
        [*TRUSTMESH, "audit", "verify", "--app-id", MCP_SERVER, "--no-live",
         "--bundle", str(world.bundle()), *extra, "--home", str(home)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def fake_home(tmp_path, lines: list[str]):
    home = tmp_path / "home"
    (home / "audit").mkdir(parents=True)
    _write(home / "audit" / f"default.{MCP_SERVER}.jsonl", lines)
    return home


def test_twin_the_untouched_log_verifies_as_mcp_servers(world, tmp_path):
    lines = world.log_path(MCP_SERVER).read_text().splitlines()
    result = verify_as_home(world, fake_home(tmp_path, lines))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.xfail(
    strict=True,
    reason="review: audit verify accepts any /ns/<ns>/sa/* signer as the owner of an App's log",
)
def test_a_log_rewritten_and_signed_by_another_service_account_is_refused(world, tmp_path):
    lines = world.log_path(MCP_SERVER).read_text().splitlines()
    server_id = f"spiffe://public/ns/default/{MCP_SERVER}"
    forged = []
    flipped = False
    for line in lines:
        entry = json.loads(line)
        if entry.get("kind") == "decision":
            for role in ("caller", "callee"):
                if entry.get(role) == server_id:
                    entry[role] = str(INTRUDER_SA)
            if not flipped and entry.get("decision") == "deny":
                entry["decision"], flipped = "allow", True
        forged.append(_encode(entry))
    assert flipped
    mine = world.mcp.mesh.ca.issue(
        AppIdentity("public", "default", "intruder", source=INTRUDER_SA), now=utcnow()
    )
    forged = rechain(forged, 0, mine)
    result = verify_as_home(world, fake_home(tmp_path, forged))
    assert result.returncode == 1, result.stdout + result.stderr
