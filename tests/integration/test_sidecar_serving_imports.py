"""What a sidecar process carries in memory: the serving path, not the tools around it.

``trustmesh sidecar`` imports the CLI entry point, the sidecar command and the runtime. None of
them may pull in the HTTP client stack (urllib.request → http.client → email), the OAuth/JWT
library, the MCP SDK, or the modules of other commands (runner, control plane, k8s, CA service,
demo, SPIRE): each is loaded only when the command or configuration that needs it runs.
"""

from __future__ import annotations

import subprocess
import sys

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
