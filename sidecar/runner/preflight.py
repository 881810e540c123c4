"""Checks made before a run starts anything: nothing is started that would have to be undone.

* A fixed port (``appPort``, ``daprHTTPPort``, or their flags) already taken by another process
  is found here, not after a sidecar said "ready" and its app died binding it; the error names
  the app, the field (or flag) and the port.
* An App ID already held by a live sidecar in this mesh is refused: two sidecars with one App ID
  would race for its registry entry, and callers would reach either app.
"""

from __future__ import annotations

import errno
import socket

from identity import DEFAULT_NAMESPACE

from ..registry import Registry
from .errors import RunnerError
from .runfile import AppSpec


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """True when binding ``host:port`` fails because someone holds it.

    SO_REUSEADDR: a port whose last connection lingers in TIME_WAIT is free to use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def check_ports(apps: tuple[AppSpec, ...]) -> None:
    for app in apps:
        fixed = ((app.port_labels[0], app.app_port), (app.port_labels[1], app.http_port))
        for label, port in fixed:
            if port and port_taken(port):
                raise RunnerError(
                    f"app {app.app_id!r}: {label} {port} is already in use by another process; "
                    "free it or choose another port"
                )


def check_app_ids(registry: Registry, apps: tuple[AppSpec, ...]) -> None:
    for app in apps:
        record = registry.lookup(app.app_id, DEFAULT_NAMESPACE)
        if record is not None:
            raise RunnerError(
                f"app ID {app.app_id!r} is already held by a running sidecar (pid {record.pid}); "
                f"stop it first with 'trustmesh stop --app-id {app.app_id}'"
            )
