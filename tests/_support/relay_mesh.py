"""Real sidecars around ``misframing_app`` for the transport's security tests, and raw wires.

The transport tests speak bytes the ordinary clients refuse to send (ambiguous framing, folded
headers, idle half-open connections), so they get raw sockets here: plain ones to a sidecar's
outbound port, and mTLS ones holding a real mesh certificate to its inbound port. The app writes
every request it receives to its own log before answering, which is how a test proves that a
refused request never arrived.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from identity import AppIdentity, client_context
from tests._support.pki import utcnow
from tests._support.procs import Proc


class AppLog:
    """The app's own record of every request it received (method, path, client port)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def entries(self) -> list[dict]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]

    def paths(self) -> list[str]:
        return [entry["path"] for entry in self.entries()]

    def saw(self, msg: str) -> bool:
        """Whether a request carrying exactly ``?msg=<msg>`` reached the app."""
        return any(parse_qs(urlsplit(path).query).get("msg") == [msg] for path in self.paths())


@dataclass
class RelayMesh:
    mesh: object  # tests.integration.conftest.Mesh
    app: Proc
    server: Proc
    log: AppLog

    def client_tls(self, app_id: str) -> ssl.SSLContext:
        """A client context holding a real mesh SVID for ``app_id``."""
        ca = self.mesh.ca
        svid = ca.issue(AppIdentity(ca.trust_domain, "default", app_id), now=utcnow())
        return client_context(svid, ca.bundle)


def start_relay_mesh(mesh, extra: list[str] | None = None) -> RelayMesh:
    log = AppLog(mesh.root / "app.requests.jsonl")
    app = mesh.procs.start(
        "misframing-app",
        [sys.executable, "-m", "tests._support.misframing_app"],
        env={"APP_REQUEST_LOG": str(log.path)},
    )
    server = mesh.sidecar("server", app_port=app.ready["port"], extra=extra)
    return RelayMesh(mesh, app, server, log)


def read_answer(sock: socket.socket | ssl.SSLSocket) -> tuple[int, dict, bytes]:
    """Read one response until the peer closes: (status, lower-case headers, body)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), headers, body


def send_raw(address: tuple[str, int], raw: bytes, tls: ssl.SSLContext | None = None):
    """Send ``raw`` as is over a new connection and read the answer (status, headers, body)."""
    with socket.create_connection(address, timeout=10) as plain:
        sock = plain if tls is None else tls.wrap_socket(plain, server_side=False)
        sock.sendall(raw)
        return read_answer(sock)
