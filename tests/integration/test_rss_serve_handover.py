"""``trustmesh sidecar`` reads its flags with click, then execs the lean serving process: the same
pid, the same command-line arguments, the same messages and exit codes as a sidecar that serves
in the CLI's own process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sidecar.serve import BadLimit, build_options, started_as_the_cli

IN_PROCESS = [sys.executable, "-c", "from sidecar.cli import main; main()"]
HANDED_OVER = [sys.executable, "-m", "sidecar"]


@pytest.mark.parametrize(
    ("flags", "code"),
    [
        (["--limit", "bogus=1"], 2),  # refused by the serving process, worded by click
        (["--limit", "max_connections=0"], 2),
        (["--identity", "files"], 1),  # a SidecarConfigError from run_sidecar
        (["--svid-dir", "{tmp}/missing"], 1),  # an IdentityUnavailable from the SVID watcher
    ],
    ids=["unknown-limit", "bad-limit-value", "files-without-dir", "missing-svid-dir"],
)
def test_a_refused_start_reads_the_same_whichever_process_serves(tmp_path, flags, code):
    flags = [f.format(tmp=tmp_path) for f in flags]
    base = ["sidecar", "--app-id", "x", "--home", str(tmp_path / "home"), "--http-port", "0"]
    runs = [
        subprocess.run([*argv, *base, *flags], capture_output=True, text=True, timeout=60)
        for argv in (IN_PROCESS, HANDED_OVER)
    ]
    lines = [[ln for ln in r.stderr.splitlines() if ln.startswith("trustmesh:")] for r in runs]
    assert [r.returncode for r in runs] == [code, code]
    assert len(lines[0]) == 1 and lines[0] == lines[1], lines
    assert "Traceback" not in runs[1].stderr


def test_the_serving_process_keeps_the_pid_and_the_command_line(mesh):
    sidecar = mesh.sidecar("server")
    with open(f"/proc/{sidecar.pid}/cmdline", "rb") as handle:
        argv = handle.read().split(b"\0")
    assert argv[argv.index(b"-m") + 1] == b"sidecar.serve"  # it did hand over...
    assert b"--app-id" in argv and b"--svid-dir" in argv  # ...keeping what ps shows
    record = json.loads((mesh.home / "registry" / "default" / "server.json").read_text())
    assert record["pid"] == sidecar.pid  # the pid its starter holds is the one serving


def test_inside_another_program_the_command_keeps_its_process():
    """pytest is not the CLI: a CliRunner here must serve in-process, never exec pytest away."""
    assert started_as_the_cli() is False


def test_the_serving_process_builds_the_options_the_cli_read(tmp_path):
    spec = {
        "app_id": "web",
        "home": tmp_path,
        "namespace": "shop",
        "audit": {
            "where": None,
            "fail_closed": True,
            "checkpoint_every": 7,
            "checkpoint_seconds": 2.0,
            "max_file_bytes": 4096,
        },
        "limits": ["max_handshakes=3"],
    }
    opts = build_options(spec)
    assert opts.audit.destination == tmp_path / "audit" / "shop.web.jsonl"
    assert (opts.audit.fail_closed, opts.audit.checkpoint_every) == (True, 7)
    assert opts.limits.max_handshakes == 3
    for where, destination in (("none", None), ("stdout", "stdout"), ("a.jsonl", "a.jsonl")):
        spec["audit"]["where"] = where
        got = build_options(spec).audit.destination
        assert (str(got) if got is not None else None) == destination
    with pytest.raises(BadLimit) as caught:
        build_options({**spec, "limits": ["nope=1"]})
    assert caught.value.as_click().format_message().startswith("Invalid value for --limit:")
