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


def _forged_by_intruder(world) -> list[str]:
    """mcp-server's log with its first denial flipped, re-signed by another SA's SVID."""
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
    return rechain(forged, 0, mine)


def test_a_log_rewritten_and_signed_by_another_service_account_is_refused(world, tmp_path):
    result = verify_as_home(world, fake_home(tmp_path, _forged_by_intruder(world)))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"not of default/{MCP_SERVER}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def verify_file(world, path, home, *extra: str):
    return subprocess.run(
        [*TRUSTMESH, "audit", "verify", str(path), "--no-live", "--bundle", str(world.bundle()),
         "--home", str(home), *extra],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip


def test_the_same_forgery_verified_as_a_file_is_refused_by_its_name(world, tmp_path):
    home = fake_home(tmp_path, _forged_by_intruder(world))
    path = home / "audit" / f"default.{MCP_SERVER}.jsonl"
    result = verify_file(world, path, home)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"not of default/{MCP_SERVER}" in result.stderr, result.stderr
    copy = tmp_path / "copy.jsonl"  # renamed: whose log it is must then be said
    copy.write_bytes(path.read_bytes())
    unnamed = verify_file(world, copy, home)
    assert unnamed.returncode == 1 and "cannot tell whose log" in unnamed.stderr, unnamed.stderr
    assert verify_file(world, copy, home, "--app-id", MCP_SERVER).returncode == 1


def test_twin_the_untouched_log_verified_as_a_file_names_its_owner(world, tmp_path):
    home = fake_home(tmp_path, world.log_path(MCP_SERVER).read_text().splitlines())
    result = verify_file(world, home / "audit" / f"default.{MCP_SERVER}.jsonl", home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"(App default/{MCP_SERVER})" in result.stdout
    assert f"owner spiffe://public/ns/default/{MCP_SERVER} " in result.stdout


INTRUDER_BINDING = f"""\
apiVersion: trustmesh.dev/v1alpha1
kind: AppIdentityBinding
metadata: {{name: {MCP_SERVER}}}
spec:
  spiffeID: {INTRUDER_SA}
  appID: {MCP_SERVER}
"""


def test_twin_when_the_map_binds_that_service_account_it_owns_the_log_and_no_one_else(
    world, tmp_path
):
    """The owner rule is the identity map's: bound, the ServiceAccount *is* mcp-server, and
    the Dapr form that signed the untouched log no longer is."""
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "binding.yaml").write_text(INTRUDER_BINDING)
    bound = verify_as_home(
        world, fake_home(tmp_path / "a", _forged_by_intruder(world)), "--policy-dir", str(policy)
    )
    assert bound.returncode == 0, bound.stdout + bound.stderr
    assert f"owner {INTRUDER_SA} (App default/{MCP_SERVER})" in bound.stdout
    untouched = world.log_path(MCP_SERVER).read_text().splitlines()
    displaced = verify_as_home(
        world, fake_home(tmp_path / "b", untouched), "--policy-dir", str(policy)
    )
    assert displaced.returncode == 1 and f"held only by {INTRUDER_SA}" in displaced.stderr
