"""Tampering with the audit trail, and ``trustmesh audit verify`` catching it at the right line.

Real sidecars write the logs (``tests/_support/audit_mesh.py`` drives allowed and denied MCP,
ACL and bearer traffic through them). Each attack edits a copy the way an intruder on the host
would — one byte, a deleted record, two swapped, the newest records cut off, a record from
another sidecar's log, a whole chain rewritten and its checkpoints re-signed with a key that is
not the sidecar's — and its twin shows the same check passing on the untouched or honestly
produced log, so each refusal is the check working, not the verifier refusing everything.
Last, ``kill -9`` under load: the log a crash leaves verifies up to its last complete record,
and a restarted sidecar continues the chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time

import httpx
import pytest

from identity import AppIdentity, load_svid_dir
from sidecar.audit import checkpoint_entry
from tests._support.audit_mesh import MCP_SERVER, audit_world
from tests._support.pki import make_ca, utcnow

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    with audit_world(tmp_path_factory.mktemp("audit-tamper"), mesh_ca) as world:
        yield world


@pytest.fixture
def lines(world) -> list[str]:
    return world.log_path(MCP_SERVER).read_text().splitlines()


def _write(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def verify(world, path, *extra: str):
    return world.tm(
        "audit", "verify", str(path), "--app-id", MCP_SERVER, "--no-live",
        "--bundle", str(world.bundle()), *extra,
    )  # fmt: skip


def assert_broken_at(result, path, line: int, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert f"audit log broken: {path}:{line}: " in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _sha(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def _encode(entry: dict) -> str:
    return json.dumps(entry, separators=(",", ":"))


def rechain(lines: list[str], start: int, svid) -> list[str]:
    """What a forger with write access does after editing line ``start``: recompute every later
    ``prev`` and re-sign every later checkpoint with ``svid``."""
    out = lines[:start]
    for line in lines[start:]:
        entry = json.loads(line)
        entry["prev"] = _sha(out[-1]) if out else "0" * 64
        if entry["kind"] == "checkpoint":
            entry = checkpoint_entry(
                entry["seq"], time.time(), entry["prev"], entry["records"], svid
            )
        out.append(_encode(entry))
    return out


def _first_decision(lines: list[str], **wanted) -> int:
    for index, line in enumerate(lines):
        entry = json.loads(line)
        if entry["kind"] == "decision" and all(entry.get(k) == v for k, v in wanted.items()):
            return index
    raise AssertionError(f"no record with {wanted}")


# --- the untouched log (twin of every attack) -------------------------------------------------


def test_untouched_copy_verifies(world, lines, tmp_path):
    copy = tmp_path / "copy.jsonl"
    _write(copy, lines)
    result = verify(world, copy)
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout and "signed checkpoint" in result.stdout


# --- edits ------------------------------------------------------------------------------------


def test_one_byte_edited_is_caught_at_its_line(world, lines, tmp_path):
    index = _first_decision(lines, decision="deny")
    assert '"status":403' in lines[index]
    edited = list(lines)
    edited[index] = edited[index].replace('"status":403', '"status":203', 1)  # one byte
    copy = tmp_path / "edited.jsonl"
    _write(copy, edited)
    assert_broken_at(verify(world, copy), copy, index + 1, "changed after it was written")


def test_a_deleted_record_is_caught_where_it_is_missing(world, lines, tmp_path):
    copy = tmp_path / "deleted.jsonl"
    _write(copy, lines[:2] + lines[3:])
    assert_broken_at(verify(world, copy), copy, 3, "seq 4 where 3 was expected")


def test_two_swapped_records_are_caught_at_the_first(world, lines, tmp_path):
    swapped = list(lines)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    copy = tmp_path / "swapped.jsonl"
    _write(copy, swapped)
    assert_broken_at(verify(world, copy), copy, 2, "seq 3 where 2 was expected")


def test_a_record_from_another_sidecar_is_caught(world, lines, tmp_path):
    foreign = world.log_path("client").read_text().splitlines()
    mixed = list(lines)
    mixed[2] = foreign[2]  # same seq, another sidecar's chain
    assert json.loads(mixed[2])["seq"] == 3
    copy = tmp_path / "mixed.jsonl"
    _write(copy, mixed)
    assert_broken_at(verify(world, copy), copy, 3, "chain broken")


def test_a_torn_line_in_the_middle_is_not_a_record(world, lines, tmp_path):
    copy = tmp_path / "torn.jsonl"
    _write(copy, [*lines[:3], lines[3][: len(lines[3]) // 2], *lines[4:]])
    assert_broken_at(verify(world, copy), copy, 4, "not a JSON record")


# --- truncation: only a head seen elsewhere can tell ------------------------------------------


def test_truncating_the_newest_records_is_caught_against_a_copied_checkpoint(
    world, lines, tmp_path
):
    last_checkpoint = max(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "checkpoint")
    saved = tmp_path / "checkpoint.json"
    saved.write_text(lines[last_checkpoint] + "\n")  # what an operator ships off the host

    whole = tmp_path / "whole.jsonl"
    _write(whole, lines)
    twin = verify(world, whole, "--checkpoint", str(saved))
    assert twin.returncode == 0 and "the copied checkpoint" in twin.stdout, twin.stderr

    cut = tmp_path / "cut.jsonl"
    _write(cut, lines[:last_checkpoint])
    bare = verify(world, cut)
    assert bare.returncode == 0  # the chain alone cannot tell: it is intact as far as it goes
    result = verify(world, cut, "--checkpoint", str(saved))
    assert result.returncode == 1 and "the newest records were removed" in result.stderr


def test_a_forged_copied_checkpoint_is_refused(world, lines, tmp_path):
    cp = json.loads(next(x for x in lines if json.loads(x)["kind"] == "checkpoint"))
    cp["records"] += 1
    saved = tmp_path / "forged-checkpoint.json"
    saved.write_text(_encode(cp))
    whole = tmp_path / "whole.jsonl"
    _write(whole, lines)
    result = verify(world, whole, "--checkpoint", str(saved))
    assert result.returncode == 1 and "signature does not verify" in result.stderr


def test_truncating_the_live_log_is_caught_against_the_running_sidecars_head(world):
    live = world.log_path("api")
    original = live.read_bytes()
    twin = world.tm("audit", "verify", "--app-id", "api", "--bundle", str(world.bundle()))
    assert twin.returncode == 0 and "the running sidecar's head" in twin.stdout, twin.stderr
    kept = original.splitlines(keepends=True)[:-2]
    try:
        live.write_bytes(b"".join(kept))
        result = world.tm("audit", "verify", "--app-id", "api", "--bundle", str(world.bundle()))
        assert result.returncode == 1, result.stdout
        assert "the running sidecar has seq" in result.stderr
        assert "the newest records were removed" in result.stderr
    finally:
        live.write_bytes(original)


# --- a rewritten chain with forged checkpoints ------------------------------------------------


def _flip_first_denial(lines: list[str]) -> tuple[list[str], int]:
    index = _first_decision(lines, decision="deny")
    forged = list(lines)
    forged[index] = forged[index].replace('"decision":"deny"', '"decision":"allow"', 1)
    return forged, index


def test_a_rewritten_chain_signed_by_a_rogue_ca_is_caught_at_its_first_checkpoint(
    world, lines, tmp_path
):
    rogue = make_ca("public").issue(AppIdentity("public", "default", MCP_SERVER), now=utcnow())
    forged, index = _flip_first_denial(lines)
    forged = rechain(forged, index, rogue)
    copy = tmp_path / "rogue.jsonl"
    _write(copy, forged)
    first_cp = next(i for i, x in enumerate(forged) if i > index and '"checkpoint"' in x)
    assert_broken_at(verify(world, copy), copy, first_cp + 1, "forged checkpoint", "trust bundle")


def test_a_rewritten_chain_signed_by_another_sidecars_svid_is_caught(world, lines, tmp_path):
    other, _ = load_svid_dir(world.mcp.mesh.root / "svids" / "default.client")
    forged, index = _flip_first_denial(lines)
    forged = rechain(forged, index, other)
    copy = tmp_path / "other-sidecar.jsonl"
    _write(copy, forged)
    first_cp = next(i for i, x in enumerate(forged) if i > index and '"checkpoint"' in x)
    assert_broken_at(verify(world, copy), copy, first_cp + 1, "not to this log's sidecar")


def test_twin_the_same_rewrite_with_the_sidecars_own_key_verifies(world, lines, tmp_path):
    """The forger's tool is right: only the key it lacks makes the difference."""
    own, _ = load_svid_dir(world.mcp.mesh.root / "svids" / f"default.{MCP_SERVER}")
    forged, index = _flip_first_denial(lines)
    copy = tmp_path / "own-key.jsonl"
    _write(copy, rechain(forged, index, own))
    result = verify(world, copy)
    assert result.returncode == 0, result.stderr


def test_a_checkpoint_edited_without_its_key_is_caught(world, lines, tmp_path):
    index = next(i for i, x in enumerate(lines) if json.loads(x)["kind"] == "checkpoint")
    entry = json.loads(lines[index])
    entry["records"] += 1
    edited = list(lines)
    edited[index] = _encode(entry)  # the signature no longer covers what the record says
    copy = tmp_path / "edited-checkpoint.jsonl"
    _write(copy, edited)
    assert_broken_at(verify(world, copy), copy, index + 1, "signature does not verify")


# --- a crash under load -----------------------------------------------------------------------


def test_kill_9_under_load_leaves_a_log_that_verifies_and_a_restart_continues_it(world):
    mesh = world.mcp.mesh
    port = world.app.ready["port"]
    extra = ["--audit-checkpoint-every", "50"]
    loaded = mesh.sidecar("loaded", app_port=port, extra=extra)
    url = world.url("client", "loaded", "echo")
    done = threading.Event()
    answered = []

    def load() -> None:
        with httpx.Client(timeout=5) as http:
            while not done.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    answered.append(http.post(url, content=b"x" * 64).status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while answered.count(200) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(loaded.pid, signal.SIGKILL)  # mid-load: no drain, no final flush
    loaded.popen.wait(10)
    done.set()
    for thread in threads:
        thread.join(10)
    assert answered.count(200) >= 150

    log = world.log_path("loaded")
    result = world.tm("audit", "verify", "--app-id", "loaded", "--bundle", str(world.bundle()))
    assert result.returncode == 0, result.stderr
    survived = int(result.stdout.split("intact: ")[1].split(" records")[0])
    assert survived > 0

    again = mesh.sidecar("loaded", app_port=port, extra=extra)
    deadline = time.monotonic() + 15
    while (status := httpx.post(url, timeout=10).status_code) != 200:
        # the caller may still hold the old address or a dead pooled connection; each failed
        # try is the client's outbound record, not the restarted sidecar's
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    again.stop()  # SIGTERM: everything buffered is written, with a last checkpoint
    after = world.tm("audit", "verify", "--app-id", "loaded", "--bundle", str(world.bundle()))
    assert after.returncode == 0, after.stderr
    assert int(after.stdout.split("intact: ")[1].split(" records")[0]) == survived + 1
    last = json.loads(log.read_text().splitlines()[-1])
    assert last["kind"] == "checkpoint"
