"""Who an app started by ``trustmesh run`` runs as: never the mesh's own user when it can help it.

Theory of operation. The mesh home holds the CA's private key, the registry, the policies and
the audit chain; whoever can read or write it can mint any identity or rewrite any policy. The
runner, the CA and the sidecars are the mesh and run as the user that owns the home (0700, keys
0600). An app is *not* the mesh: a compromised app must not reach any of that.

* When the runner runs as root it starts every app as an unprivileged user: the run file's
  ``user:`` (per app, or in ``common``; a user name or a numeric uid), else ``nobody``. The
  app's supplementary groups are dropped, and ``HOME``/``USER``/``LOGNAME`` describe that user,
  as ``su`` and ``runuser`` do. Apps given the same user can read each other's environment
  (``/proc/<pid>/environ``, which holds their API tokens): give an app that must be kept apart
  from the others a ``user:`` of its own.
* When the runner does not run as root it cannot switch users: every app then runs as the
  mesh's own user and could read the CA key. The runner says so in one line at start; ``run``
  is then a development tool with one trust boundary (README, "Security model"). A ``user:``
  naming anyone else is refused, since it could not be honoured.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RunnerError

DEFAULT_USER = "nobody"


@dataclass(frozen=True)
class AppUser:
    """The credentials an app's process is started with."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def label(self) -> str:
        return f"{self.name} (uid {self.uid})"

    def env(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def _may(user: AppUser, info: os.stat_result, want: int) -> bool:
    """Mode bits only (ACLs aside): may ``user`` do ``want`` (r=4, x=1) on this file?

    Supplementary groups are dropped when an app starts, so only the primary group counts.
    """
    if user.uid == 0:
        return True
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == user.uid:
        return (mode >> 6) & want == want
    if info.st_gid == user.gid:
        return (mode >> 3) & want == want
    return mode & want == want


def blocked_at(user: AppUser, path: Path, *, execute: bool = False) -> Path | None:
    """The first component of ``path`` that ``user`` cannot pass (or read and run), or None."""
    path = Path(os.path.abspath(path))
    for part in [*reversed(path.parents), path]:
        try:
            info = os.stat(part)
        except OSError:
            return part
        want = 0o1  # a directory on the way (or the app's own): search permission
        if part == path and execute and not stat.S_ISDIR(info.st_mode):
            want = 0o5  # a program: read (scripts need it) and execute
        if not _may(user, info, want):
            return part
    return None


def unreachable(
    user: AppUser, app_dir: Path, command: Sequence[str], env: Mapping[str, str]
) -> str | None:
    """Why ``user`` could not start ``command`` in ``app_dir``; None if it looks fine."""
    if (where := blocked_at(user, app_dir)) is not None:
        return f"cannot enter {app_dir} (no access to {where})"
    if not command:
        return None
    program = command[0]
    if "/" in program:
        found = Path(os.path.normpath(app_dir / program))
    else:
        which = shutil.which(program, path=env.get("PATH", os.defpath))
        if which is None:
            return None  # the start itself reports "not found"
        found = Path(which)
    real = Path(os.path.realpath(found))
    for candidate in dict.fromkeys((found, real)):
        if (where := blocked_at(user, candidate, execute=True)) is not None:
            return f"cannot run {candidate} (no access to {where})"
    return None


def can_switch_users() -> bool:
    return os.geteuid() == 0


def _lookup(raw: str) -> AppUser | None:
    try:
        entry = pwd.getpwuid(int(raw)) if raw.isdigit() else pwd.getpwnam(raw)
    except (KeyError, OverflowError):
        if raw.isdigit():  # a bare uid without a passwd entry is fine: its own group number
            uid = int(raw)
            return AppUser(f"uid {uid}", uid, uid, "/nonexistent")
        return None
    return AppUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir or "/")


def app_user(requested: str | None, app_id: str) -> AppUser | None:
    """The user ``app_id`` runs as; None means "as the runner itself" (no switch possible)."""
    if not can_switch_users():
        if requested is not None:
            me = _lookup(str(os.geteuid()))
            wanted = _lookup(requested)
            if me is None or wanted is None or wanted.uid != me.uid:
                raise RunnerError(
                    f"app {app_id!r}: user {requested!r} needs 'trustmesh run' to run as root "
                    "(it cannot switch users otherwise)"
                )
        return None
    name = requested if requested is not None else DEFAULT_USER
    user = _lookup(name)
    if user is None:
        where = "its user:" if requested is not None else "the default user"
        raise RunnerError(
            f"app {app_id!r}: {where} {name!r} does not exist on this system; "
            "set 'user:' in the run file to an existing unprivileged user"
        )
    return user


def single_boundary_warning() -> str:
    """The one line said at start when apps share the mesh's user."""
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        me = f"uid {os.geteuid()}"
    return (
        f"apps run as {me}, the mesh's own user (the runner is not root, so it cannot switch "
        "users): an app can read the CA key and rewrite mesh state; use 'run' as a development "
        "tool (see the README's security model)"
    )
