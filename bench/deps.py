"""The programs the bench drives: nginx (the reference proxy and the app) and wrk (the load).

Installed from Debian with apt when missing — the index is refreshed only if the first
install fails — and found with ``shutil.which`` (nginx lives in /usr/sbin).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from .procs import BenchError

PACKAGES = {"nginx": "nginx", "wrk": "wrk"}
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def which(program: str) -> str | None:
    return shutil.which(program, path=SEARCH_PATH)


def _apt_install(packages: list[str]) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    argv = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    return subprocess.run(argv, env=env, capture_output=True, timeout=600).returncode == 0


def ensure_programs() -> dict[str, str]:
    """Return {program: path}, installing missing ones with apt; raise BenchError if impossible."""
    missing = [name for name in PACKAGES if which(name) is None]
    if missing:
        packages = [PACKAGES[name] for name in missing]
        if shutil.which("apt-get") is None:
            raise BenchError(
                f"bench needs {' and '.join(missing)}, and there is no apt-get to install "
                f"{' '.join(packages)}: install them and run again"
            )
        print(f"installing {' '.join(packages)} with apt-get …", flush=True)
        if not _apt_install(packages):
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            if not _apt_install(packages):
                raise BenchError(
                    f"apt-get install {' '.join(packages)} failed (are you root?): "
                    "install them and run again"
                )
    found = {name: which(name) for name in PACKAGES}
    still_missing = [name for name, path in found.items() if path is None]
    if still_missing:
        raise BenchError(f"{', '.join(still_missing)} not on PATH after installing")
    return {name: path for name, path in found.items() if path is not None}


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"
