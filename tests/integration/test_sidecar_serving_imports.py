"""What a sidecar process carries in memory: the serving path, not the tools around it.

``trustmesh sidecar`` imports the CLI entry point, the sidecar command and the runtime. None of
them may pull in the HTTP client stack (urllib.request → http.client → email), the OAuth/JWT
library, the MCP SDK, or the modules of other commands (runner, control plane, k8s, CA service,
demo, SPIRE): each is loaded only when the command or configuration that needs it runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests._support.ca_proc import running_ca

NOT_FOR_SERVING = (
    "urllib.request",
    "http.client",
    "jwt",
    "mcp",
    "sidecar.runner",
    "sidecar.cli_control",
    "sidecar.cli_run",
    "sidecar.cli_mcp",
    "sidecar.cli_audit",
    "sidecar.k8s",
    "sidecar.demo",
    "sidecar.identity_spire",
    "ca.cli",
)


def test_the_sidecar_command_imports_nothing_its_serving_path_does_not_need():
    code = (
        "import sys, sidecar.cli, sidecar.cli_sidecar, sidecar.runtime\n"
        f"print(sorted(m for m in {NOT_FOR_SERVING!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_import_check_sees_a_module_that_is_loaded():
    """The twin: the same probe reports a module the serving path does load, so the check above
    cannot pass merely because it looks at the wrong process or the wrong names."""
    code = (
        "import sys, sidecar.cli, sidecar.cli_sidecar, sidecar.runtime\n"
        "print(sorted(m for m in ('trio', 'sidecar.http.server') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['sidecar.http.server', 'trio']"


# -- a real serving process, asked what it loaded after it served ------------------------------

# Imported by no serving sidecar in the common configurations (SVID files or the bundled CA, no
# bearer policy): the X.509 library (~10 MiB resident), the CA's signing core (which imports it),
# and click with the CLI modules, which only read the flags before the serving process replaces
# them (sidecar.serve).
NOT_IN_A_SERVING_PROCESS = (
    *NOT_FOR_SERVING,
    "cryptography",
    "ca._authority",
    "ca.client",
    "click",
    "sidecar.cli",
    "sidecar.cli_support",
    "sidecar.cli_sidecar",
    "sidecar.cli_home",
)
PYTHONPATH = os.environ.get("PYTHONPATH", "")
PROBE_SITE = Path(__file__).resolve().parents[1] / "_support" / "probe_site"


def _modules_of(proc, path) -> set[str]:
    """Ask a sidecar started with ``PROBE_SITE`` on its path for its ``sys.modules``."""
    path.unlink(missing_ok=True)
    proc.popen.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not path.exists():
        assert time.monotonic() < deadline, f"{proc.name} did not answer the probe"
        time.sleep(0.02)
    return set(path.read_text().split())


def _mapped_files(pid: int) -> str:
    with open(f"/proc/{pid}/maps") as maps:
        return maps.read()


@pytest.fixture
def served_pair(mesh, tmp_path):
    """Two sidecars started by the command the bench runs (``python -m sidecar sidecar
    --svid-dir DIR --http-port 0``), that have served a request over mTLS and signed an audit
    checkpoint for it."""
    app = mesh.procs.app("server-app")
    procs = {}
    for name, port in (("server", app.ready["port"]), ("client", None)):
        env = {
            "TRUSTMESH_PROBE_MODULES": str(tmp_path / f"{name}.modules"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE_SITE), PYTHONPATH])),
        }
        procs[name] = mesh.procs.sidecar(
            name,
            mesh.home,
            svid_dir=mesh.svid_dir(name),
            app_port=port,
            extra=["--audit-checkpoint-every", "1"],  # a signed checkpoint after each record
            env=env,
        )
    reply = httpx.post(
        f"{procs['client'].url()}/v1.0/invoke/server/method/echo", content=b"hi", timeout=10
    )
    assert reply.status_code == 200, reply.text
    audit = mesh.home / "audit" / "default.server.jsonl"
    deadline = time.monotonic() + 10
    while b'"kind":"checkpoint"' not in (audit.read_bytes() if audit.exists() else b""):
        assert time.monotonic() < deadline, "the server sidecar signed no checkpoint"
        time.sleep(0.05)
    return procs, tmp_path


def test_a_serving_sidecar_never_imports_cryptography_jwt_or_the_ca(served_pair):
    """After an mTLS exchange (handshakes, both peers' SPIFFE IDs read, the caller judged) and
    a signed checkpoint, neither sidecar has loaded any of the heavy modules."""
    procs, tmp_path = served_pair
    for name, proc in procs.items():
        modules = _modules_of(proc, tmp_path / f"{name}.modules")
        assert sorted(m for m in NOT_IN_A_SERVING_PROCESS if m in modules) == [], name
        assert not any(m.startswith("cryptography.") for m in modules), name
        # Seen from outside too: no cryptography extension is mapped into the process.
        assert "cryptography" not in _mapped_files(proc.pid), name


def test_the_process_probe_sees_what_a_serving_sidecar_has_loaded(served_pair):
    """The twin: the same probe reports the modules serving does load (TLS, trio, the
    certificate reader, the signer), so the check above reads the right process."""
    procs, tmp_path = served_pair
    for name, proc in procs.items():
        modules = _modules_of(proc, tmp_path / f"{name}.modules")
        assert {"ssl", "trio", "identity._der", "sidecar.http.server", "sidecar.runtime"} <= modules
        assert "_ssl" in _mapped_files(proc.pid), name
    assert "identity._sign" in _modules_of(procs["server"], tmp_path / "server.modules")


def test_a_sidecar_enrolled_and_renewed_by_the_bundled_ca_never_imports_cryptography(
    mesh, tmp_path
):
    """Keys and CSRs are made by a short-lived child (sidecar.ca_worker): after joining with a
    token and renewing a 4-second SVID, the serving process still has no X.509 library."""
    tm = [sys.executable, "-m", "sidecar"]
    subprocess.run([*tm, "ca", "init", "--home", str(mesh.home)], check=True, capture_output=True)
    with running_ca(mesh.home, tmp_path / "ca.log", "--svid-ttl", "4s") as ca:
        token = subprocess.run(
            [*tm, "ca", "token", "--app-id", "joined", "--home", str(mesh.home)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        env = {
            "TRUSTMESH_JOIN_TOKEN": token,
            "TRUSTMESH_PROBE_MODULES": str(tmp_path / "joined.modules"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROBE_SITE), PYTHONPATH])),
        }
        proc = mesh.procs.sidecar("joined", mesh.home, extra=["--ca-url", ca.url], env=env)
        deadline = time.monotonic() + 30
        while True:
            svid = httpx.get(f"http://{proc.ready['admin']}/v1/status").json()["svid"]
            if svid["renewals"] >= 1:
                break
            assert time.monotonic() < deadline, f"no renewal: {svid}"
            time.sleep(0.2)
        modules = _modules_of(proc, tmp_path / "joined.modules")
    assert sorted(m for m in NOT_IN_A_SERVING_PROCESS if m in modules) == []
    assert {"identity._der", "sidecar.ca_worker"} <= modules  # the twin: the probe sees it
    assert "cryptography" not in _mapped_files(proc.pid)
