"""A ConfigMap volume as kubelet writes it (its AtomicWriter), for tests that update policy.

Layout: ``..<timestamp>/`` holds the files, ``..data -> ..<timestamp>``, and every key is a
symlink ``<key> -> ..data/<key>``. An update writes a new timestamped directory, points
``..data_tmp`` at it, renames that over ``..data`` (the atomic step), fixes the key symlinks and
removes the old directory — the order kubelet uses (kubernetes/pkg/volume/util/atomic_writer.go).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from pathlib import Path

_counter = itertools.count()


def publish(directory: Path, files: dict[str, str]) -> str:
    """Atomically replace the ConfigMap's contents with ``files``; return the new data dir."""
    directory.mkdir(parents=True, exist_ok=True)
    data_link = directory / "..data"
    old = os.readlink(data_link) if data_link.is_symlink() else None
    stamp = f"..2026_12_05_00_00_00.{os.getpid()}{next(_counter):06d}"
    target = directory / stamp
    target.mkdir()
    for key, text in files.items():
        (target / key).write_text(text)
    tmp = directory / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(stamp, tmp)
    os.rename(tmp, data_link)
    for key in files:
        link = directory / key
        if not link.is_symlink():
            os.symlink(f"..data/{key}", link)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old is not None:
        shutil.rmtree(directory / old, ignore_errors=True)
    return stamp
