"""The audit writer under trio: buffering, flushing, checkpoints, rotation, failures, restarts.

Each test drives ``AuditLog`` directly (no sockets) and reads back what reached the disk with
the verifier the CLI uses, so "nothing lost" and "still a chain" are checked the same way an
operator would check them.
"""

from __future__ import annotations

import json
import os

import pytest
import trio

from identity import AppIdentity, IdentityBinding, IdentityMap, SpiffeId
from sidecar.audit import AppOwner, AuditLog, AuditSettings, log_files, verify_files
from sidecar.audit.sinks import AuditLogUnusable
from tests._support.pki import issue

ME = "spiffe://public/ns/default/server"


@pytest.fixture
def svid(mesh_ca):
    return issue(mesh_ca, "server")


def decision(n: int = 0, **extra) -> dict:
    return {
        "direction": "inbound",
        "callee": ME,
        "caller": "spiffe://public/ns/default/client",
        "verb": "POST",
        "path": f"echo/{n}",
        "decision": "allow",
        "status": 200,
        **extra,
    }


def make(tmp_path, svid=None, **settings) -> AuditLog:
    return AuditLog(
        AuditSettings(tmp_path / "default.server.jsonl", **settings),
        signer=lambda: svid,
    )


def check(tmp_path, mesh_ca, **kw):
    report = verify_files(log_files(tmp_path / "default.server.jsonl"), mesh_ca.bundle, **kw)
    assert report.error is None, report.error
    return report


async def test_records_reach_the_disk_only_when_the_flush_task_writes_them(tmp_path, mesh_ca):
    audit = make(tmp_path, flush_interval=0.01)
    audit.record(**decision())
    assert (tmp_path / "default.server.jsonl").read_bytes() == b""  # not on the request path
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        with trio.fail_after(5):
            while audit.written_seq < 1:
                await trio.sleep(0.005)
        nursery.cancel_scope.cancel()
    assert check(tmp_path, mesh_ca).records == 1
    audit.close()


async def test_close_writes_everything_buffered_and_a_final_checkpoint(tmp_path, mesh_ca, svid):
    audit = make(tmp_path, svid)
    for n in range(25):
        audit.record(**decision(n))
    audit.close()  # what SIGTERM ends in
    report = check(tmp_path, mesh_ca)
    assert (report.records, report.checkpoints) == (25, 1)
    last = json.loads((tmp_path / "default.server.jsonl").read_text().splitlines()[-1])
    assert last["kind"] == "checkpoint" and last["spiffe_id"] == ME


async def test_a_checkpoint_every_n_records(tmp_path, mesh_ca, svid):
    audit = make(tmp_path, svid, checkpoint_every=10)
    for n in range(30):
        audit.record(**decision(n))
    await audit.flush()
    assert check(tmp_path, mesh_ca).checkpoints == 3
    audit.close()


async def test_a_checkpoint_after_t_seconds_of_activity(tmp_path, mesh_ca, svid, autojump_clock):
    audit = make(tmp_path, svid, checkpoint_seconds=60, checkpoint_every=10_000)
    audit._last_checkpoint = 0.0  # time.monotonic is the wall clock; pretend a minute passed
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        audit.record(**decision())
        with trio.fail_after(5):
            while audit.checkpoints == 0 or audit.buffered:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert check(tmp_path, mesh_ca).checkpoints == 1
    audit.close()


async def test_files_rotate_by_size_and_the_chain_continues_across_them(tmp_path, mesh_ca, svid):
    audit = make(tmp_path, svid, max_file_bytes=2048, checkpoint_every=7)
    for n in range(60):
        audit.record(**decision(n))
        if n % 5 == 4:
            await audit.flush()
    audit.close()
    files = log_files(tmp_path / "default.server.jsonl")
    assert len(files) > 3
    assert all(os.path.getsize(f) < 2048 + 8192 for f in files)  # at most one batch over
    report = check(tmp_path, mesh_ca)
    assert report.records == 60 and report.checkpoints >= 8
    # Drop a middle file: the break is named in the next one.
    files[1].unlink()
    broken = verify_files(log_files(tmp_path / "default.server.jsonl"), mesh_ca.bundle)
    assert broken.error is not None and broken.error.file == files[2]
    assert "deleted or reordered" in broken.error.message


async def test_a_restarted_sidecar_continues_the_chain(tmp_path, mesh_ca, svid):
    first = make(tmp_path, svid)
    for n in range(3):
        first.record(**decision(n))
    first.close()
    second = make(tmp_path, svid)
    second.record(**decision(99))
    second.close()
    report = check(tmp_path, mesh_ca)
    assert (report.records, report.checkpoints) == (4, 2)


async def test_a_torn_last_line_is_cut_on_restart(tmp_path, mesh_ca, svid):
    first = make(tmp_path, svid)
    for n in range(3):
        first.record(**decision(n))
    first.close()
    path = tmp_path / "default.server.jsonl"
    with path.open("ab") as handle:
        handle.write(b'{"seq":5,"time":"2026-')  # what kill -9 mid-write leaves
    torn = verify_files([path], mesh_ca.bundle)
    assert torn.error is None and "incomplete last record" in torn.warnings[0]
    second = make(tmp_path, svid)
    second.record(**decision(4))
    second.close()
    assert check(tmp_path, mesh_ca).records == 4


def test_a_log_ending_in_garbage_refuses_to_start(tmp_path):
    (tmp_path / "default.server.jsonl").write_text("this is not a record\n")
    with pytest.raises(AuditLogUnusable, match="not an audit record"):
        make(tmp_path)


class FailingSink:
    describe = "failing"

    def __init__(self) -> None:
        self.fail = True
        self.written: list[bytes] = []

    def resume(self):
        return 0, "0" * 64

    def write(self, data: bytes, first_seq: int) -> None:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.written.append(data)

    def close(self) -> None:
        pass


async def test_a_failing_disk_keeps_the_records_and_reports_it(tmp_path):
    audit = make(tmp_path)
    audit.sink = sink = FailingSink()
    audit.record(**decision(1))
    await audit.flush()
    status = audit.status()
    assert (status["healthy"], status["write_errors"], status["buffered"]) == (False, 1, 1)
    assert status["last_error"] == "No space left on device"
    assert audit.refusal() is None  # fail-open by default
    audit.record(**decision(2))
    sink.fail = False
    await audit.flush()
    lines = b"".join(sink.written).splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2]  # nothing lost, order kept
    assert audit.status()["healthy"] is True


async def test_fail_closed_refuses_while_the_disk_fails(tmp_path):
    audit = make(tmp_path, fail_closed=True)
    audit.sink = sink = FailingSink()
    assert audit.refusal() is None
    audit.record(**decision())
    await audit.flush()
    refusal = audit.refusal()
    assert refusal is not None and refusal.status == 503
    assert json.loads(refusal.response_body())["errorCode"] == "ERR_AUDIT_UNAVAILABLE"
    assert "No space left on device" in refusal.message
    sink.fail = False
    await audit.flush()
    assert audit.refusal() is None


async def test_a_full_buffer_drops_and_counts_or_refuses(tmp_path):
    open_log = make(tmp_path, max_buffer=3)
    for n in range(5):
        open_log.record(**decision(n))
    assert (open_log.buffered, open_log.dropped, open_log.healthy) == (3, 2, False)
    closed = AuditLog(AuditSettings(tmp_path / "other.jsonl", max_buffer=3, fail_closed=True))
    for n in range(3):
        closed.record(**decision(n))
    assert "buffer is full" in closed.refusal().message
    open_log.close()
    closed.close()


def test_audit_none_keeps_nothing_and_stdout_writes_json_lines(tmp_path, capfd, svid):
    AuditLog(None).record(**decision())
    out = AuditLog(AuditSettings("stdout"), signer=lambda: svid)
    out.record(**decision(7))
    out.close()
    lines = capfd.readouterr().out.splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["decision", "checkpoint"]
    assert json.loads(lines[0])["path"] == "echo/7"
    assert list(tmp_path.iterdir()) == []


def test_owner_is_checked_against_the_app_id(tmp_path, mesh_ca):
    audit = make(tmp_path)
    audit.record(**decision())
    audit.close()
    files = log_files(tmp_path / "default.server.jsonl")
    report = verify_files(files, mesh_ca.bundle, expected_owner=owner("other"))
    assert report.error is not None and "not of default/other" in report.error.message
    assert "held only by spiffe://public/ns/default/other or " in report.error.message
    ok = verify_files(files, mesh_ca.bundle, expected_owner=owner("server"))
    assert ok.error is None


def test_identity_is_the_svid_of_the_checkpoint(svid):
    assert svid.identity == AppIdentity("public", "default", "server")


def test_an_empty_log_matches_a_head_of_nothing_written(tmp_path, mesh_ca):
    from sidecar.audit.verify import check_head

    audit = make(tmp_path)
    files = log_files(tmp_path / "default.server.jsonl")
    report = verify_files(files, mesh_ca.bundle, watch=[0, 3])
    check_head(report, audit.written_seq, audit.written_hash, "the running sidecar")
    assert report.error is None and report.records == 0
    check_head(report, 3, "ab" * 32, "the running sidecar")
    assert "the newest records were removed" in report.error.message
    audit.close()


async def test_without_an_svid_the_checkpoint_waits_a_period_instead_of_spinning(
    tmp_path, autojump_clock
):
    audit = make(tmp_path, None, checkpoint_seconds=60)  # no SVID: nothing can sign
    audit._last_checkpoint = 0.0  # the period is over
    audit.record(**decision())
    assert audit.checkpoint() is False
    assert audit._last_checkpoint > 0.0  # the next try is a whole period away
    audit.close()


def owner(app_id: str, namespace: str = "default", bindings=()) -> AppOwner:
    return AppOwner(namespace, app_id, IdentityMap(bindings))


def _log_owned_by(tmp_path, callee: str):
    audit = make(tmp_path)
    audit.record(**decision(callee=callee))
    audit.close()
    return log_files(tmp_path / "default.server.jsonl")


def test_the_default_service_account_identity_owns_its_apps_log(tmp_path, mesh_ca):
    files = _log_owned_by(tmp_path, "spiffe://public/ns/default/sa/server")
    assert verify_files(files, mesh_ca.bundle, expected_owner=owner("server")).error is None
    other = verify_files(files, mesh_ca.bundle, expected_owner=owner("server", "prod"))
    assert other.error is not None


def test_another_service_account_of_the_namespace_does_not_own_the_log(tmp_path, mesh_ca):
    files = _log_owned_by(tmp_path, "spiffe://public/ns/default/sa/intruder")
    report = verify_files(files, mesh_ca.bundle, expected_owner=owner("server"))
    assert report.error is not None and "not of default/server" in report.error.message


def test_a_bound_service_account_owns_the_log_and_the_default_forms_no_longer_do(tmp_path, mesh_ca):
    bound = SpiffeId.parse("spiffe://public/ns/default/sa/server-sa")
    binding = IdentityBinding(bound, "default", "server")
    files = _log_owned_by(tmp_path / "bound", str(bound))
    mapped = owner("server", bindings=[binding])
    assert verify_files(files, mesh_ca.bundle, expected_owner=mapped).error is None
    assert verify_files(files, mesh_ca.bundle, expected_owner=owner("server")).error is not None
    squatter = _log_owned_by(tmp_path / "squat", "spiffe://public/ns/default/sa/server")
    refused = verify_files(squatter, mesh_ca.bundle, expected_owner=mapped)
    assert refused.error is not None and str(bound) in refused.error.message


async def test_a_batch_kept_after_a_failed_write_counts_every_record_it_holds(tmp_path):
    audit = make(tmp_path, max_buffer=5, fail_closed=True)
    audit.sink = sink = FailingSink()
    for n in range(3):
        audit.record(**decision(n))
    await audit.flush()
    assert audit.buffered == 3  # three records waiting, not one failed write
    audit.record(**decision(3))
    audit.record(**decision(4))
    assert audit.buffer_full and "buffer is full" in audit.refusal().message
    audit.record(**decision(5))
    assert audit.dropped == 1
    sink.fail = False
    await audit.flush()
    lines = b"".join(sink.written).splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert (audit.buffered, audit.written_seq) == (0, 5)


async def test_without_an_svid_a_checkpoint_is_tried_every_n_records_not_every_record(tmp_path):
    asked = []

    def signer():
        asked.append(1)

    audit = AuditLog(
        AuditSettings(tmp_path / "default.server.jsonl", checkpoint_every=10), signer=signer
    )
    for n in range(35):
        audit.record(**decision(n))
    await audit.flush()
    assert len(asked) == 3  # at 10, 20 and 30 records
    audit.close()


async def test_a_checkpoint_signs_the_head_of_records_not_yet_encoded(tmp_path, mesh_ca, svid):
    audit = make(tmp_path, svid, checkpoint_every=10_000)
    for n in range(4):
        audit.record(**decision(n))
    assert audit.checkpoint()
    audit.record(**decision(4))
    audit.close()
    lines = [json.loads(x) for x in (tmp_path / "default.server.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["decision"] * 4 + ["checkpoint", "decision", "checkpoint"]
    assert lines[4]["records"] == 4
    assert check(tmp_path, mesh_ca).checkpoints == 2


async def test_every_nth_record_is_followed_by_a_checkpoint_signed_off_the_request_path(
    tmp_path, mesh_ca, svid
):
    signed = []

    def signer():
        signed.append(1)
        return svid

    path = tmp_path / "default.server.jsonl"
    audit = AuditLog(AuditSettings(path, checkpoint_every=10), signer=signer)
    for n in range(20):
        audit.record(**decision(n))
    assert signed == []  # the 10th and 20th requests did not sign anything themselves
    audit.close()  # 20 records: the checkpoint after the 20th covers them all, none added
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    marks = [(x["seq"], x["records"]) for x in lines if x["kind"] == "checkpoint"]
    assert marks == [(11, 10), (22, 20)]
    assert check(tmp_path, mesh_ca).checkpoints == 2


async def test_a_value_json_cannot_write_is_recorded_as_text_and_the_writer_goes_on(
    tmp_path, mesh_ca
):
    class Odd:
        def __str__(self) -> str:
            return "odd value"

    circular: list = []
    circular.append(circular)
    audit = make(tmp_path)
    audit.record(**decision(1, message=Odd()))
    audit.record(**decision(2, names=circular))
    audit.record(**decision(3))
    await audit.flush()  # encoding happens here, after record() returned
    audit.close()
    lines = [json.loads(x) for x in (tmp_path / "default.server.jsonl").read_text().splitlines()]
    assert [x["message"] for x in lines] == ["odd value", None, None]
    assert isinstance(lines[1]["names"], str) and lines[2]["path"] == "echo/3"
    assert check(tmp_path, mesh_ca).records == 3


async def test_a_large_batch_is_encoded_in_slices_and_stays_one_chain(tmp_path, mesh_ca, svid):
    from sidecar.audit.log import ENCODE_SLICE

    audit = make(tmp_path, svid, checkpoint_every=100)
    records = ENCODE_SLICE * 3 + 5
    async with trio.open_nursery() as nursery:
        nursery.start_soon(audit.flush)
        for n in range(records):  # recorded while the flush yields between slices
            audit.record(**decision(n))
            await trio.lowlevel.checkpoint()
    await audit.flush()
    audit.close()
    report = check(tmp_path, mesh_ca)
    assert report.records == records and report.checkpoints == records // 100 + 1


async def test_a_log_written_one_generic_encoding_per_record_continues_and_verifies(
    tmp_path, mesh_ca, svid
):
    """What sidecars wrote before records were encoded in batches: the same lines, so an old
    log resumes and verifies as one chain with what the batch encoder adds."""
    from sidecar.audit.record import GENESIS, decision_entry, encode, line_hash

    path = tmp_path / "default.server.jsonl"
    prev, old = GENESIS, []
    for seq in range(1, 4):
        line = encode(decision_entry(seq, 1_800_000_000.0 + seq, decision(seq), prev))
        old.append(line + b"\n")
        prev = line_hash(line)
    path.write_bytes(b"".join(old))
    audit = make(tmp_path, svid)
    for n in range(4, 7):
        audit.record(**decision(n))
    audit.close()
    report = check(tmp_path, mesh_ca)
    assert (report.records, report.checkpoints, report.head_seq) == (6, 1, 7)
    assert path.read_bytes().startswith(b"".join(old))
