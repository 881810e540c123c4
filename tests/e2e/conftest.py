"""Fixtures for end-to-end MCP tests: one mesh per module, since MCP servers are slow to start."""

from __future__ import annotations

import os

import pytest

from tests._support.mcp_mesh import McpMesh
from tests._support.runner_dirs import app_reachable_dir
from tests.integration.conftest import Mesh


@pytest.fixture(scope="module")
def mcp_mesh(tmp_path_factory, mesh_ca):
    """A mesh home and a process set shared by one module; every process stops with it."""
    mesh = McpMesh(Mesh(tmp_path_factory.mktemp("mcp-mesh"), mesh_ca))
    yield mesh
    killed = mesh.procs.stop_all()
    assert not killed, f"processes outlived SIGTERM: {killed}"


@pytest.fixture
def tmp_path(tmp_path):
    """Reachable by the unprivileged user that ``trustmesh run`` starts apps as under root."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    with app_reachable_dir() as path:
        yield path
