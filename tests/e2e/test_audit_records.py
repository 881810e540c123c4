"""Every decision on the record: real sidecars, real traffic, then the records read back.

The mesh (``tests/_support/audit_mesh.py``) sends one request of each kind — MCP calls allowed
and denied, plain calls allowed and denied by the ACL, a refused bearer token, a call to an App ID
that does not exist — and each test reads what the sidecars wrote: one inbound record per
decision of the receiving sidecar, one outbound record per request the calling sidecar sent or
refused, complete and chained; ``audit verify`` accepts the untouched logs; ``audit tail`` finds
exactly the denied calls of one tool; ``/metrics`` and ``/v1/status`` show the same story.
"""

from __future__ import annotations

import json
import re
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.audit import DECISION_FIELDS
from tests._support.audit_mesh import (
    CHECKPOINT_EVERY,
    MCP_SERVER,
    META_TRACE_ID,
    TRACE_ID,
    audit_world,
)

pytestmark = pytest.mark.e2e

RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
CLIENT = "spiffe://public/ns/default/client"
SERVER = f"spiffe://public/ns/default/{MCP_SERVER}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, mesh_ca):
    with audit_world(tmp_path_factory.mktemp("audit-e2e"), mesh_ca) as world:
        yield world


def _one(records: list[dict], **wanted) -> dict:
    found = [r for r in records if all(r.get(k) == v for k, v in wanted.items())]
    assert len(found) == 1, (wanted, found)
    return found[0]


def test_the_traffic_got_the_answers_the_policies_give(world):
    codes = {name: r.status_code for name, r in world.responses.items()}
    assert codes == {
        "mcp_allowed": 200,
        "mcp_denied": 403,
        "mcp_denied_again": 403,
        "mcp_denied_other_tool": 403,
        "mcp_allowed_echo": 200,
        "plain_allowed": 200,
        "plain_denied": 403,
        "bearer_denied": 401,
        "unknown_app": 404,
    }
    # The upstream's own log: allowed calls arrived, denied ones never did.
    bodies = b"".join(world.mcp_log.bodies())
    assert b'"add"' in bodies and b'"echo"' in bodies
    assert b"get_weather_alert" not in bodies and b'"fail"' not in bodies


def test_every_record_has_every_field_a_utc_time_and_a_consecutive_seq(world):
    for app_id in world.sidecars:
        lines = [json.loads(x) for x in world.log_path(app_id).read_text().splitlines()]
        assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1)), app_id
        for record in lines:
            assert RFC3339_UTC.fullmatch(record["time"]), record
            if record["kind"] == "decision":
                assert set(DECISION_FIELDS) <= record.keys(), record
                assert record["decision"] in ("allow", "deny")
                assert isinstance(record["duration_ms"], float)


def test_mcp_decisions_name_the_tool_the_argument_keys_never_the_values(world):
    records = world.records(MCP_SERVER)
    allowed = _one(records, names=["add"])
    assert allowed | {"seq": 0, "time": "", "prev": "", "duration_ms": 0} == allowed | {
        "seq": 0,
        "time": "",
        "prev": "",
        "duration_ms": 0,
        "kind": "decision",
        "direction": "inbound",
        "callee": SERVER,
        "caller": CLIENT,
        "bearer_subject": None,
        "verb": "POST",
        "path": "mcp",
        "mcp_method": "tools/call",
        "arg_keys": ["a", "b"],
        "decision": "allow",
        "status": 200,
        "trace_id": TRACE_ID,
    }
    assert allowed["response_bytes"] > 0
    assert allowed["policy_version"]
    denied = [r for r in records if r["names"] == ["get_weather_alert"]]
    assert [(r["decision"], r["layer"], r["status"]) for r in denied] == [("deny", "mcp", 403)] * 2
    assert denied[0]["arg_keys"] == ["city"]
    assert (denied[0]["reason"], denied[0]["rule"]) == (
        "tool_not_granted",
        "policy mcp-server: no rule grants it",
    )
    assert denied[0]["trace_id"] == META_TRACE_ID  # from params._meta.traceparent
    assert "secret-city" not in world.log_path(MCP_SERVER).read_text()


def test_acl_and_bearer_denials_are_recorded_with_their_layer(world):
    api = world.records("api")
    assert _one(api, caller=CLIENT)["decision"] == "allow"
    intruder = _one(api, caller="spiffe://public/ns/default/intruder")
    assert (intruder["decision"], intruder["layer"], intruder["status"]) == ("deny", "acl", 403)
    assert intruder["message"]
    bearer = _one(world.records("secure"), status=401)
    assert (bearer["decision"], bearer["layer"]) == ("deny", "bearer")


def test_the_calling_sidecar_records_each_request_it_sent_or_refused(world):
    outbound = world.records("client")
    assert {r["direction"] for r in outbound} == {"outbound"}
    assert {r["caller"] for r in outbound} == {CLIENT}
    sent = [r for r in outbound if r["callee"] == SERVER]
    assert len(sent) == 5 and {r["decision"] for r in sent} == {"allow"}
    assert sorted(r["status"] for r in sent) == [200, 200, 403, 403, 403]
    refused = _one(outbound, callee="spiffe://public/ns/default/nowhere")
    assert (refused["decision"], refused["status"], refused["reason"]) == (
        "deny",
        404,
        "ERR_DIRECT_INVOKE",
    )
    assert _one(outbound, callee=SERVER, status=200, trace_id=TRACE_ID)
    intruder = world.records("intruder")
    assert [(r["callee"], r["status"]) for r in intruder] == [
        ("spiffe://public/ns/default/api", 403)
    ]


def test_checkpoints_are_written_every_n_records(world):
    lines = [json.loads(x) for x in world.log_path(MCP_SERVER).read_text().splitlines()]
    kinds = [r["kind"] for r in lines]
    assert kinds[: CHECKPOINT_EVERY + 1] == ["decision"] * CHECKPOINT_EVERY + ["checkpoint"]
    checkpoint = lines[CHECKPOINT_EVERY]
    assert checkpoint["spiffe_id"] == SERVER and checkpoint["sig"] and "BEGIN" in checkpoint["svid"]


def _verify(world, *args: str) -> subprocess.CompletedProcess:
    return world.tm("audit", "verify", *args, "--bundle", str(world.bundle()))


@pytest.mark.parametrize("app_id", ["mcp-server", "api", "secure", "client", "intruder"])
def test_audit_verify_accepts_every_untouched_log_against_the_running_head(world, app_id):
    result = _verify(world, "--app-id", app_id)
    assert result.returncode == 0, result.stderr
    assert "intact" in result.stdout and "the running sidecar's head" in result.stdout
    head = world.status(app_id)["audit"]["head"]
    assert f"head seq {head['seq']}" in result.stdout


def test_status_shows_the_head_and_a_healthy_log(world):
    audit = world.status(MCP_SERVER)["audit"]
    assert audit["healthy"] is True and audit["dropped"] == 0 and audit["write_errors"] == 0
    last = world.log_path(MCP_SERVER).read_text().splitlines()[-1]
    import hashlib

    assert audit["head"] == {
        "seq": json.loads(last)["seq"],
        "hash": hashlib.sha256(last.encode()).hexdigest(),
    }


def test_tail_denied_tool_shows_exactly_the_denied_calls_to_that_tool(world):
    result = world.tm("audit", "tail", "--denied", "--tool", "get_weather_alert", "-o", "json")
    assert result.returncode == 0, result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(shown) == 2
    assert {(r["callee"], r["decision"], tuple(r["names"])) for r in shown} == {
        (SERVER, "deny", ("get_weather_alert",))
    }
    text = world.tm("audit", "tail", "--denied", "--tool", "get_weather_alert")
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert all("DENY" in line and "client → mcp-server" in line for line in lines)
    assert all("tools/call get_weather_alert" in line and "mcp:" in line for line in lines)


def test_tail_filters_by_caller_and_time(world):
    by_intruder = world.tm("audit", "tail", "--caller", "intruder", "-o", "json")
    assert {json.loads(x)["caller"] for x in by_intruder.stdout.splitlines()} == {
        "spiffe://public/ns/default/intruder"
    }
    assert world.tm("audit", "tail", "--since", "1h").stdout.strip()
    bad = world.tm("audit", "tail", "--since", "ten minutes")
    assert bad.returncode != 0 and "not a duration" in bad.stderr and "Traceback" not in bad.stderr


def test_metrics_carry_the_labels_an_operator_filters_by(world):
    text = httpx.get(f"http://{world.sidecars[MCP_SERVER].ready['admin']}/metrics").text
    samples = [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "trustmesh_requests_total"
    ]
    wanted = {
        "direction": "inbound",
        "caller": "client",
        "callee": MCP_SERVER,
        "decision": "deny",
        "layer": "mcp",
        "mcp_method": "tools/call",
    }
    denied_tools = {s["tool"] for s in samples if wanted.items() <= s.items()}
    # get_weather_alert and fail are granted to no one: one bounded label value for both.
    assert denied_tools == {"other"}
    allowed = {s["tool"] for s in samples if s["decision"] == "allow"}
    assert {"add", "echo"} <= allowed
    assert "trustmesh_audit_healthy 1.0" in text


def test_audit_log_stdout_writes_the_same_records_as_json_lines(world):
    sidecar = world.mcp.mesh.sidecar(
        "stdout-api", app_port=world.app.ready["port"], extra=["--audit-log", "stdout"]
    )
    url = world.url("client", "stdout-api", "echo")
    assert httpx.post(url, timeout=10).status_code == 200
    assert sidecar.stop() == 0  # SIGTERM: the buffered record and a last checkpoint go out
    lines = [json.loads(x) for x in sidecar.popen.stdout.read().decode().splitlines()]
    records = [x for x in lines if x.get("kind") in ("decision", "checkpoint")]
    assert [r["kind"] for r in records] == ["decision", "checkpoint"]
    assert (records[0]["caller"], records[0]["decision"]) == (CLIENT, "allow")
    assert set(DECISION_FIELDS) <= records[0].keys()
    assert not world.log_path("stdout-api").exists()


def test_tail_follow_prints_new_decisions_as_they_arrive(world):
    import select
    import subprocess
    import time

    from tests._support.procs import REPO, TRUSTMESH

    argv = [*TRUSTMESH, "audit", "tail", "--app-id", "api", "--follow", "--denied", "-o", "json",
            "--home", str(world.home)]  # fmt: skip
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        existing = follower.stdout.readline()  # the intruder's denial already on record
        assert json.loads(existing)["caller"] == "spiffe://public/ns/default/intruder"
        assert httpx.post(world.url("client", "api", "echo"), timeout=10).status_code == 200
        assert httpx.post(world.url("intruder", "api", "again"), timeout=10).status_code == 403
        deadline = time.monotonic() + 10
        while not select.select([follower.stdout], [], [], 0.2)[0]:
            assert time.monotonic() < deadline, "tail --follow printed nothing new"
        new = json.loads(follower.stdout.readline())
        assert (new["path"], new["decision"]) == ("again", "deny")  # the allowed call: filtered
    finally:
        follower.terminate()
        follower.wait(10)
