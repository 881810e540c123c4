"""``examples/per-tool-servers/README.md``, step by step, as a user runs it.

Four database MCP servers, each behind its own deny-by-default ``Configuration``, and three
agents that each try one tool on every server. ``trustmesh run -f`` starts them on free ports, in
a temporary mesh directory, over a fresh SQLite file; every README command is run word for word
(and must still be in the README); the run is stopped with ``trustmesh stop -f`` and no process
may outlive it.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests._support.example_run import REPO, ExampleRun

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "per-tool-servers"
SERVERS = ["mcp-db-schema", "mcp-db-query", "mcp-db-write", "mcp-db-ddl"]
# The diagram of hosted-acl-reference.txt: which agent may reach which server.
ALLOWED = {
    "analyst-agent": ["mcp-db-schema", "mcp-db-query"],
    "ops-agent": ["mcp-db-schema", "mcp-db-query", "mcp-db-write"],
    "admin-agent": SERVERS,
}
RESULTS = {
    "mcp-db-schema": {
        "tool": "describe_table",
        "ok": True,
        "result": "items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, quantity INTEGER NOT NULL)",
    },
    "mcp-db-query": {"tool": "query", "ok": True, "result": '[{"items": 3}]'},
    "mcp-db-write": {
        "tool": "set_quantity",
        "ok": True,
        "result": "updated 'widgets': quantity = 12",
    },
    "mcp-db-ddl": {"tool": "create_table", "ok": True, "result": "table 'scratch' exists"},
}
CONFIGURATIONS = """\
NAME               DEFAULT ACTION  POLICIES  APP IDS
mcp-db-ddl-acl     deny            1         mcp-db-ddl
mcp-db-query-acl   deny            3         mcp-db-query
mcp-db-schema-acl  deny            3         mcp-db-schema
mcp-db-write-acl   deny            2         mcp-db-write
"""
WAITED = "enforced by default/admin-agent, default/analyst-agent, default/mcp-db-ddl"


def refused(agent: str, server: str) -> dict:
    message = (
        f"access control policy has denied access to id: spiffe://public/ns/default/{agent} "
        "operation: mcp verb: POST"
    )
    return {
        "tool": RESULTS[server]["tool"],
        "ok": False,
        "status": 403,
        "error": {"errorCode": "ERR_DIRECT_INVOKE", "message": message},
    }


def expected(agent: str, allowed: list[str]) -> dict:
    return {
        "agent": agent,
        "succeeded": allowed,
        "refused": [s for s in SERVERS if s not in allowed],
        "failed": [],
        "results": {s: RESULTS[s] if s in allowed else refused(agent, s) for s in SERVERS},
    }


@pytest.fixture
def example(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the four servers write it; as root they run as an unprivileged user
    run = ExampleRun(
        EXAMPLE, "per-tool-servers.yaml", tmp_path, env={"DB_PATH": str(data / "db.sqlite")}
    )
    yield run
    run.kill_leftovers()


def test_readme_walkthrough(example, tmp_path):
    readme = example.readme
    example.start()
    rows = {r["app_id"]: r for r in json.loads(example.cli("trustmesh list -o json").stdout)}
    assert set(rows) == {*SERVERS, *ALLOWED}
    for server in SERVERS:  # each server guarded by its own configuration, as the run file says
        assert rows[server]["configuration"] == f"{server}-acl"
        assert rows[server]["mcp_server"] is None  # the ACL alone: not registered for tool policy
    assert example.step("trustmesh list").startswith("APP ID")
    configurations = example.step("trustmesh configuration list")
    assert configurations == CONFIGURATIONS and CONFIGURATIONS in readme

    # 1-3. Each agent reaches exactly the servers the diagram allows; the rest answer 403.
    for port, agent in zip((5201, 5202, 5203), ALLOWED, strict=True):
        assert f"curl -s -X POST localhost:{port}/run\n" in readme
        answer = example.post_run(agent)
        assert answer == expected(agent, ALLOWED[agent]), json.dumps(answer, indent=2)
        for server in answer["refused"]:
            assert answer["results"][server]["error"]["message"] in readme

    # The write went to the one SQLite file, the DDL too; the seed rows are there.
    with sqlite3.connect(tmp_path / "data" / "db.sqlite") as db:
        assert db.execute("SELECT name, quantity FROM items ORDER BY id").fetchall() == [
            ("widgets", 12),
            ("gadgets", 4),
            ("gizmos", 7),
        ]
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").fetchone()
    db.close()

    # 4. mcp-db-query refuses anything but SELECT, even for admin: a tool error, not a 403.
    assert """curl -s -X POST localhost:5203/run -d '{"sql": "DELETE FROM items"}'""" in readme
    answer = example.post_run("admin-agent", {"sql": "DELETE FROM items"})
    assert answer["failed"] == ["mcp-db-query"] and answer["refused"] == []
    query = answer["results"]["mcp-db-query"]
    assert query["error"] in readme and "only SELECT statements are allowed" in query["error"]
    sql = "SELECT name, quantity FROM items ORDER BY id"
    assert f"""curl -s -X POST localhost:5201/run -d '{{"sql": "{sql}"}}'""" in readme
    answer = example.post_run("analyst-agent", {"sql": sql})
    rows_json = answer["results"]["mcp-db-query"]["result"]
    assert json.loads(rows_json)[0] == {"name": "widgets", "quantity": 12}
    assert json.dumps(rows_json)[1:-1] in readme  # shown escaped, inside the agent's JSON

    # 5. Runtime ACL change: let the analyst write, then put the file's policy back.
    out = example.step(
        "trustmesh configuration create mcp-db-write-acl --default-action deny "
        "--policy ops-agent:allow --policy admin-agent:allow --policy analyst-agent:allow --wait"
    )
    replaced = "configuration/mcp-db-write-acl replaced version 1\napplied as version 2;"
    assert out.startswith(replaced) and WAITED in out and replaced in readme
    answer = example.post_run("analyst-agent")
    assert answer["succeeded"] == ["mcp-db-schema", "mcp-db-query", "mcp-db-write"]
    assert answer["refused"] == ["mcp-db-ddl"]
    out = example.step("trustmesh apply -f config/mcp-db-write.yaml --wait", cwd=EXAMPLE)
    reapplied = "configuration/mcp-db-write-acl replaced version 2\napplied as version 3;"
    assert out.startswith(reapplied) and reapplied in readme
    assert example.post_run("analyst-agent") == expected("analyst-agent", ALLOWED["analyst-agent"])

    # Stop: nothing outlives the run.
    assert "trustmesh stop -f per-tool-servers.yaml" in readme
    assert example.stop().startswith("stopped the run of ")
