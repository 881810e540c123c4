"""Running the ``trustmesh`` command in-process, exactly as the console script does.

``sidecar.cli.main`` (not click's ``CliRunner``) is what turns errors into one stderr line and an
exit status, so tests call it, with the working directory and environment they choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sidecar.cli import main


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


class Cli:
    """``cli("configuration", "list")`` runs ``trustmesh configuration list`` in ``cwd``."""

    def __init__(
        self, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        self.capsys = capsys
        self.monkeypatch = monkeypatch
        monkeypatch.delenv("TRUSTMESH_HOME", raising=False)
        # Home discovery stops at the test's own directory: a .trustmesh some other run left
        # in a shared parent (/tmp) must not become this test's mesh.
        monkeypatch.setenv("TRUSTMESH_CEILING_DIRECTORIES", str(tmp_path.parent))

    def __call__(self, *argv: str, cwd: Path | None = None, env: dict | None = None) -> CliResult:
        with self.monkeypatch.context() as patch:
            if cwd is not None:
                patch.chdir(cwd)
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            self.capsys.readouterr()
            try:
                main(list(argv))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            out, err = self.capsys.readouterr()
        return CliResult(code, out, err)


def files_under(root: Path) -> list[str]:
    """Every path below ``root``, relative: what a command left behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def one_line_error(result: CliResult) -> str:
    """The stderr of a failed command, checked to be one ``trustmesh:`` line, no traceback."""
    assert result.code != 0, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trustmesh: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


__all__ = ["Cli", "CliResult", "files_under", "one_line_error"]
