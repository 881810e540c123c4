"""Fixtures for end-to-end MCP tests: one mesh per module, since MCP servers are slow to start."""

from __future__ import annotations

import pytest

from tests._support.mcp_mesh import McpMesh
from tests.integration.conftest import Mesh


@pytest.fixture(scope="module")
def mcp_mesh(tmp_path_factory, mesh_ca):
    """A mesh home and a process set shared by one module; every process stops with it."""
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("mcp-mesh"), mesh_ca))
    yield mesh
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"
