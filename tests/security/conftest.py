"""Fixtures for the security tier: attacks and their legitimate twins through real sidecars.

One mesh per module (MCP servers cost about a second to start), as in ``tests/e2e``. Helpers
(callers in another namespace, raw requests) live in ``tests/_support/mcp_attack.py``.
"""

from __future__ import annotations

import pytest

from tests._support.mcp_mesh import McpMesh
from tests.integration.conftest import Mesh
from tests.integration.conftest import mesh as mesh  # a mesh of the test's own


@pytest.fixture(scope="module")
def mcp_mesh(tmp_path_factory, mesh_ca):
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("mcp-sec"), mesh_ca))
    yield mesh
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


@pytest.fixture(autouse=True)
def no_process_died(request):
    """Whatever an attack did, every sidecar and server of the module is still running."""
    yield
    if "mcp_mesh" in request.fixturenames:
        mesh = request.getfixturevalue("mcp_mesh")
        assert [p.name for p in mesh.procs.procs if p.popen.poll() is not None] == []
