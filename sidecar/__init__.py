"""The trustmesh sidecar: data plane, policies, mesh state, runner and the ``trustmesh`` CLI."""
