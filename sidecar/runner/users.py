"""Who an app started by ``trustmesh run`` runs as: never the mesh's own user when it can help it.

Theory of operation. The mesh home holds the CA's private key, the registry, the policies and
the audit chain; whoever can read or write it can mint any identity or rewrite any policy. The
runner, the CA and the sidecars are the mesh and run as the user that owns the home (0700, keys
0600). An app is *not* the mesh: a compromised app must not reach any of that.

* When the runner runs as root it starts every app as an unprivileged user: the run file's
  ``user:`` (per app, or in ``common``; a user name or a numeric uid), else a *dynamic user of
  its own*. Apps must be kept apart from each other too: processes of one user can read each
  other's environment (``/proc/<pid>/environ``), which holds each app's API token, so an app
  sharing a user with a more privileged one could call the mesh as that one. A dynamic user is
  a uid from systemd's ``DynamicUser=`` range (61184-65519) that the user database does not
  know, chosen from a hash of the home and the App ID (stable across runs, probing past taken
  ones), so nothing is created on the system. The apps of one run share one dynamic group and
  run with umask 007, so files one writes for another (a shared database) stay shared within
  the run and private to it. Supplementary groups are dropped; ``HOME``/``USER``/``LOGNAME``
  describe the user, as ``su`` and ``runuser`` do (a dynamic user's ``HOME`` is
  ``/nonexistent``, as ``nobody``'s; set ``HOME`` in the run file's ``env`` if an app needs
  one). Apps given one ``user:`` explicitly share what that user can reach.
* When the runner does not run as root it cannot switch users: every app then runs as the
  mesh's own user and could read the CA key. The runner says so in one line at start; ``run``
  is then a development tool with one trust boundary (README, "Security model"). A ``user:``
  naming anyone else is refused, since it could not be honoured.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RunnerError

DYNAMIC_IDS = range(61184, 65520)  # systemd's DynamicUser= range: not in the user database
DYNAMIC_UMASK = 0o007  # shared within the run's group, private to everyone else


@dataclass(frozen=True)
class AppUser:
    """The credentials an app's process is started with."""

    name: str
    uid: int
    gid: int
    home: str
    umask: int | None = None  # None: inherited
    dynamic: bool = False

    @property
    def label(self) -> str:
        if self.dynamic:
            return f"a dynamic user of its own (uid {self.uid})"
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


def _free_id(seed: str, known: Callable[[int], bool], avoid: set[int]) -> int:
    size = len(DYNAMIC_IDS)
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % size
    for offset in range(size):
        candidate = DYNAMIC_IDS[(start + offset) % size]
        if candidate not in avoid and not known(candidate):
            return candidate
    raise RunnerError(f"no free id left in {DYNAMIC_IDS.start}-{DYNAMIC_IDS.stop - 1}")


def _uid_known(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def _gid_known(gid: int) -> bool:
    try:
        grp.getgrgid(gid)
    except KeyError:
        return False
    return True


def dynamic_users(home: Path, app_ids: Sequence[str]) -> dict[str, AppUser]:
    """A distinct dynamic user per App ID, all in one dynamic group for the run."""
    gid = _free_id(f"{home}\0group", _gid_known, set())
    users: dict[str, AppUser] = {}
    for app_id in dict.fromkeys(app_ids):
        taken = {u.uid for u in users.values()}
        uid = _free_id(f"{home}\0app\0{app_id}", _uid_known, taken)
        name = f"trustmesh-{app_id}"[:32]
        users[app_id] = AppUser(name, uid, gid, "/nonexistent", DYNAMIC_UMASK, dynamic=True)
    return users


def app_user(requested: str | None, app_id: str, default: AppUser | None = None) -> AppUser | None:
    """The user ``app_id`` runs as; None means "as the runner itself" (no switch possible).

    ``default`` (a dynamic user, as root) stands when the run file names none.
    """
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
    if requested is None:
        return default if default is not None else dynamic_users(Path("/"), [app_id])[app_id]
    user = _lookup(requested)
    if user is None:
        raise RunnerError(
            f"app {app_id!r}: its user: {requested!r} does not exist on this system; "
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
