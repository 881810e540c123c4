"""``examples/tool-access/README.md``, step by step, as a user runs it.

``trustmesh run -f tool-access.yaml`` (on free ports, in a temporary mesh directory), then every
command of the README word for word — each must still be in the README — with the outputs the
README shows; the agent is asked with ``POST /run``, as the README's ``curl`` does. The run is
stopped with ``trustmesh stop -f`` and no process may outlive it.
"""

from __future__ import annotations

import pytest

from tests._support.example_run import REPO, ExampleRun

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "tool-access"
AGENT = "analyst-agent"
WAITED = "enforced by default/analyst-agent, default/mcp-server, default/weather-service"

OK_ADD = {"ok": True, "result": "5"}
OK_ECHO = {"ok": True, "result": "hello from analyst-agent"}
OK_WEATHER = {"ok": True, "result": "Severe thunderstorm warning until 6 PM CDT"}
EVERYTHING = {
    "agent": AGENT,
    "session": "open",
    "tools": ["add", "get_weather_alert", "echo"],
    "calls": {"add": OK_ADD, "echo": OK_ECHO, "get_weather_alert": OK_WEATHER},
}
REFUSED = {
    "agent": AGENT,
    "session": "refused (HTTP 403): session refused: caller 'analyst-agent' holds no grant on "
    "MCP server 'mcp-server'",
    "tools": [],
    "calls": {},
}


def denied(tool: str) -> dict:
    message = f"tool '{tool}' is not granted to caller 'analyst-agent'"
    return {"ok": False, "status": 403, "error": message}


@pytest.fixture
def example(tmp_path):
    run = ExampleRun(EXAMPLE, "tool-access.yaml", tmp_path)
    yield run
    run.kill_leftovers()


def test_readme_walkthrough(example):
    readme = example.readme
    assert "curl -s -X POST localhost:5101/run" in readme
    output = example.start()
    assert "You're up and running!" in output
    table = example.step("trustmesh list")
    assert table.startswith("APP ID") and "analyst-agent" in table

    # 1. Not yet an MCP server, no ACL: everything is open.
    assert example.post_run(AGENT) == EVERYTHING

    # 2-3. Registered: deny-all, no rules; the agent's session is refused.
    out = example.step("trustmesh mcpserver create mcp-server --wait")
    assert out.splitlines()[0] == "MCP server mcp-server registered at /mcp (deny-all policy)"
    assert out.splitlines()[0] in readme and WAITED in out
    assert example.step("trustmesh mcpserver access get mcp-server") == (
        "mcp-server: deny-all (no rules)\n"
    )
    assert example.step("trustmesh mcpserver access list") == "mcp-server: deny-all (no rules)\n"
    assert REFUSED["session"] in readme
    assert example.post_run(AGENT) == REFUSED

    # 4. Grant add and echo: exactly those are listed; get_weather_alert is refused, named.
    out = example.step(
        "trustmesh mcpserver access grant mcp-server --caller analyst-agent "
        "--allow-tools add,echo --wait"
    )
    assert "  rules[0] callers=analyst-agent tools=add,echo\n" in out and WAITED in out
    assert example.post_run(AGENT) == {
        "agent": AGENT,
        "session": "open",
        "tools": ["add", "echo"],
        "calls": {"add": OK_ADD, "echo": OK_ECHO, "get_weather_alert": denied("get_weather_alert")},
    }

    # 5. access test: exit 0 allowed, 1 denied, with the lines the README shows.
    allowed = example.step(
        "trustmesh mcpserver access test mcp-server --caller analyst-agent --tool add"
    )
    refused = example.step(
        "trustmesh mcpserver access test mcp-server --caller analyst-agent "
        "--tool get_weather_alert",
        expect=1,
    )
    for line in (allowed, refused):
        assert line.strip() in readme, line
    assert allowed.startswith("ALLOWED: ") and refused.startswith("DENIED: ")

    # 6. Revoke echo: add stays. Revoke all: deny-all again.
    out = example.step(
        "trustmesh mcpserver access revoke mcp-server --caller analyst-agent "
        "--allow-tools echo --wait"
    )
    assert "  rules[0] callers=analyst-agent tools=add\n" in out and WAITED in out
    assert example.post_run(AGENT) == {
        "agent": AGENT,
        "session": "open",
        "tools": ["add"],
        "calls": {
            "add": OK_ADD,
            "echo": denied("echo"),
            "get_weather_alert": denied("get_weather_alert"),
        },
    }
    out = example.step(
        "trustmesh mcpserver access revoke mcp-server --caller analyst-agent --all --wait"
    )
    assert out.startswith("mcp-server: deny-all (no rules)\n") and WAITED in out
    assert example.post_run(AGENT) == REFUSED

    # 7. Wildcards: every caller, every tool.
    out = example.step(
        'trustmesh mcpserver access grant mcp-server --caller "*" --allow-tools "*" --wait'
    )
    assert "  rules[0] callers=* tools=*\n" in out and WAITED in out
    assert example.post_run(AGENT) == EVERYTHING
    anyone = example.step(
        "trustmesh mcpserver access test mcp-server --caller someone-else --tool echo"
    )
    assert anyone.strip() in readme

    # Stop: nothing outlives the run.
    assert "trustmesh stop -f tool-access.yaml" in readme
    assert example.stop().startswith("stopped the run of ")
