"""``bench/audit_cost.py`` drives the proxies' own ``_record``: it must keep up with them.

``make bench`` reports its figure, so a change to what a proxy's ``_record`` takes would break
the bench run long after the change; this runs it for a few requests and checks that each one
left its record, on both sides.
"""

from __future__ import annotations

import json

from bench import audit_cost


async def test_the_audit_cost_bench_records_one_line_per_request_on_each_side(tmp_path):
    for side, run in (("inbound", audit_cost.inbound_us), ("outbound", audit_cost.outbound_us)):
        path = tmp_path / f"{side}.jsonl"
        audit = audit_cost.new_log(path)
        assert await run(audit, 20) > 0
        audit.close()
        records = [json.loads(x) for x in path.read_text().splitlines()]
        decisions = [r for r in records if r["kind"] == "decision"]
        assert len(decisions) == 20 and {r["direction"] for r in decisions} == {side}
        assert all(r["decision"] == "allow" and r["status"] == 200 for r in decisions)
    inbound = json.loads((tmp_path / "inbound.jsonl").read_text().splitlines()[0])
    assert (inbound["mcp_method"], inbound["names"], inbound["arg_keys"]) == (
        "tools/call",
        ["add"],
        ["a", "b"],
    )
