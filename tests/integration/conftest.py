"""Fixtures for tests that run real sidecar and app processes on 127.0.0.1."""

from __future__ import annotations

import pytest

from identity import AppIdentity, save_svid_dir
from tests._support.pki import utcnow
from tests._support.procs import ProcessSet


class Mesh:
    """A mesh home, a CA, and a process set whose members are stopped after the test."""

    def __init__(self, root, ca) -> None:
        self.root = root
        self.home = root / "home"
        self.ca = ca
        self.procs = ProcessSet(root)

    def svid_dir(self, app_id: str, namespace: str = "default", **kw):
        directory = self.root / "svids" / f"{namespace}.{app_id}"
        svid = self.ca.issue(
            AppIdentity(self.ca.trust_domain, namespace, app_id), now=utcnow(), **kw
        )
        save_svid_dir(directory, svid, self.ca.bundle)
        return directory

    def sidecar(self, app_id: str, app_port: int | None = None, **kw):
        return self.procs.sidecar(
            app_id, self.home, svid_dir=self.svid_dir(app_id), app_port=app_port, **kw
        )


@pytest.fixture
def mesh(tmp_path, mesh_ca):
    mesh = Mesh(tmp_path, mesh_ca)
    yield mesh
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"
