"""`make demo` as a user meets it: the quickstart end to end, and its README kept honest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = REPO / "examples" / "mcp-access-control" / "README.md"


def _processes_mentioning(fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline:
            found.append(int(entry.name))
    return found


def test_the_demo_runs_every_scenario_and_leaves_nothing_behind():
    result = subprocess.run(
        [sys.executable, "-m", "sidecar.demo"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
    )
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert out.count("✔") == 9, out
    assert '"weather_alert": "Severe thunderstorm warning until 6 PM CDT"' in out
    assert '"error": "ACCESS_DENIED"' in out
    assert "operation: alerts verb: GET" in out
    assert "tool 'get_weather_alert' is not granted to caller 'mcp-client'" in out
    assert "Quickstart complete" in out
    assert _processes_mentioning("trustmesh-demo-") == []

    # Every trustmesh command the demo ran is one the README tells the user to type.
    readme = README.read_text()
    commands = re.findall(r"^\$ (trustmesh [^\n]+)$", out, flags=re.MULTILINE)
    assert len(commands) >= 12
    for command in commands:
        if command.startswith(("trustmesh run -f", "trustmesh stop -f")):
            command = command.replace("examples/mcp-access-control/", "")
        assert command in readme, f"README does not show: {command}"
