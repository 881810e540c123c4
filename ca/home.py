"""The mesh state directory and where the CA keeps its files inside it.

Every ``trustmesh`` command and every sidecar agrees on one directory: the ``--home`` option if
given, else ``$TRUSTMESH_HOME``, else the nearest ``.trustmesh/`` in the current directory or its
parents, else ``./.trustmesh``. It holds keys, so it is created 0700 and
an existing one that others can read is tightened, not trusted as is. The CA's files sit in
``<home>/ca/``; other packages add their own sub-directories beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._errors import CANotInitialised, CAStorageError

HOME_ENV = "TRUSTMESH_HOME"
CEILING_ENV = "TRUSTMESH_CEILING_DIRECTORIES"
DEFAULT_HOME = ".trustmesh"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def resolve_home(option: str | os.PathLike[str] | None = None, *, create: bool = False) -> Path:
    """The state directory: ``option`` > ``$TRUSTMESH_HOME`` > the nearest ``.trustmesh/`` in
    the current directory or its parents (as git finds ``.git``) > ``./.trustmesh``.

    So every command run anywhere inside a project reaches the one mesh created at its top.
    With ``create`` the directory (and parents) is made 0700 if missing, and an existing one is
    chmod-ed to 0700. The path is returned absolute so a later ``chdir`` cannot move it.
    """
    raw = option if option not in (None, "") else os.environ.get(HOME_ENV)
    if raw:
        home = Path(raw).expanduser().absolute()
    else:
        home = find_home() or Path(DEFAULT_HOME).absolute()
    if create:
        ensure_private_dir(home)
    return home


def find_home(start: Path | None = None) -> Path | None:
    """The nearest ``.trustmesh`` directory at ``start`` (default: the cwd) or above it.

    ``$TRUSTMESH_CEILING_DIRECTORIES`` (paths separated by ``os.pathsep``) are directories the
    search does not climb into, as ``GIT_CEILING_DIRECTORIES`` for git: for trees where a parent
    is shared (a temporary directory, a network mount) and its mesh is not this project's.
    """
    here = (start or Path.cwd()).absolute()
    raw_ceilings = os.environ.get(CEILING_ENV, "").split(os.pathsep)
    ceilings = {Path(raw).absolute() for raw in raw_ceilings if raw}
    for directory in (here, *here.parents):
        if directory in ceilings and directory != here:
            return None
        candidate = directory / DEFAULT_HOME
        if candidate.is_dir():
            return candidate
    return None


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` 0700 (parents with the umask's mode), or tighten it if it exists."""
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        if not path.is_dir():
            raise CAStorageError(f"{path} exists and is not a directory")
        if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
            path.chmod(PRIVATE_DIR_MODE)
    except OSError as exc:
        raise CAStorageError(f"cannot create private directory {path}: {exc.strerror}") from exc
    return path


@dataclass(frozen=True)
class CALayout:
    """The CA's files under ``<home>/ca/``. Keys are 0600; everything else is public material."""

    home: Path
    part: str = ""  # "next": the CA a rotation has prepared (``ca/next/``)

    @property
    def directory(self) -> Path:
        return self.home / "ca" / self.part if self.part else self.home / "ca"

    @property
    def next(self) -> CALayout:
        """Where ``trustmesh ca rotate prepare`` keeps the CA that will replace this one."""
        return CALayout(self.home, "next")

    @property
    def rotation(self) -> Path:
        """The phase of a CA rotation under way (absent when none is)."""
        return self.directory / "rotation.json"

    @property
    def svid_lifetime(self) -> Path:
        """The longest SVID lifetime a ``ca serve`` of this CA has issued with: what a rotation
        step must wait at least, whatever ``--svid-ttl`` it is given."""
        return self.directory / "svid-lifetime.json"

    @property
    def root_cert(self) -> Path:
        return self.directory / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.directory / "root.key"

    @property
    def issuer_cert(self) -> Path:
        return self.directory / "issuer.pem"

    @property
    def issuer_key(self) -> Path:
        return self.directory / "issuer.key"

    @property
    def bundle(self) -> Path:
        return self.directory / "bundle.pem"

    @property
    def tokens(self) -> Path:
        return self.directory / "tokens.json"

    @property
    def lock(self) -> Path:
        return self.directory / ".lock"

    @property
    def key_files(self) -> tuple[Path, Path]:
        return (self.root_key, self.issuer_key)

    @property
    def all_files(self) -> tuple[Path, ...]:
        return (self.root_cert, self.root_key, self.issuer_cert, self.issuer_key, self.bundle)

    def ensure(self) -> CALayout:
        ensure_private_dir(self.home)
        ensure_private_dir(self.directory)
        return self


def ca_layout(home: str | os.PathLike[str] | None = None, *, create: bool = False) -> CALayout:
    """The CA layout of the state directory ``home`` (resolved with :func:`resolve_home`)."""
    layout = CALayout(resolve_home(home))
    return layout.ensure() if create else layout


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block.

    ``trustmesh ca token`` and ``trustmesh ca serve`` are separate processes that both rewrite
    ``tokens.json``; the lock makes each read-modify-write atomic with respect to the other.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except FileNotFoundError:
        raise CANotInitialised(
            f"no CA in {lock_path.parent} (the directory is missing); run 'trustmesh ca init'"
        ) from None
    except OSError as exc:
        raise CAStorageError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
