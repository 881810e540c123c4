"""A ``sidecar`` package planted in the working directory never runs as the sidecar.

``trustmesh sidecar`` hands over to ``python -m sidecar.serve``, and ``-m`` puts the working
directory first on ``sys.path``. Started where someone else can write (the app's own directory,
say), the serving process would import a planted ``sidecar/__init__.py`` instead of trustmesh's,
and that code would run holding the sidecar's private key. The serving process must import the
package the CLI did. The attack plants a package that leaves a mark when imported; the command
refuses a bad ``--limit`` (a refusal made by the serving process, after the hand-over), so the
refusal's wording and exit code show which code served. The twin runs the same command from a
clean directory and reads the same refusal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TRUSTMESH = Path(sys.executable).with_name("trustmesh")


def _refused_start(cwd: Path, home: Path) -> subprocess.CompletedProcess:
    argv = [str(TRUSTMESH), "sidecar", "--app-id", "x", "--home", str(home)]
    argv += ["--http-port", "0", "--limit", "bogus=1"]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def _refusal(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("trustmesh:")]


def test_a_sidecar_package_planted_in_the_working_directory_is_not_imported(tmp_path):
    planted = tmp_path / "appdir" / "sidecar"
    planted.mkdir(parents=True)
    mark = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(mark)!r}, 'w').close()\n")
    (planted / "serve.py").write_text("import sys\nsys.exit(0)\n")
    run = _refused_start(planted.parent, tmp_path / "home")
    assert not mark.exists(), "the serving process imported the planted package"
    assert run.returncode == 2, run.stderr
    assert len(_refusal(run)) == 1 and "Invalid value for --limit" in _refusal(run)[0]


def test_the_same_start_from_a_clean_directory_is_refused_the_same_way(tmp_path):
    clean = tmp_path / "appdir"
    clean.mkdir()
    run = _refused_start(clean, tmp_path / "home")
    assert run.returncode == 2, run.stderr
    assert len(_refusal(run)) == 1 and "Invalid value for --limit" in _refusal(run)[0]
    assert "Traceback" not in run.stderr
