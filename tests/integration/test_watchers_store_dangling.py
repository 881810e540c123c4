"""A dangling symlink in the mesh store is a broken resource named by its file, never "absent".

Read as absent, a dangling ``AppIdentityBinding`` would silently drop out of the identity map
(handing its App ID back to the default ServiceAccount form), and a dangling binding file would
leave its app with no configuration at all, without a word.
"""

from __future__ import annotations

import os

import pytest

from sidecar.identity_source import IdentityUnavailable, identity_map_from_resources
from sidecar.state.store import AppBinding, MeshStore, StoreError

BINDING = {
    "apiVersion": "trustmesh.dev/v1alpha1",
    "kind": "AppIdentityBinding",
    "metadata": {"name": "runner"},
    "spec": {"spiffeID": "spiffe://public/ns/default/sa/runner", "appID": "client"},
}


def _store(tmp_path) -> MeshStore:
    store = MeshStore(tmp_path / "home")
    with store.change() as change:
        change.put("AppIdentityBinding", "runner", BINDING)
        change.put_binding(AppBinding(app_id="server"))
    return store


def _dangle(path) -> None:
    path.unlink()
    os.symlink("nowhere.yaml", path)


def test_a_dangling_resource_is_a_broken_resource_naming_the_file(tmp_path) -> None:
    store = _store(tmp_path)
    _dangle(store.path("AppIdentityBinding", "runner"))
    resources = store.snapshot("server", "default").resources
    broken = resources[("AppIdentityBinding", "runner")]
    assert isinstance(broken, StoreError)
    assert "runner.yaml is a symlink to nowhere.yaml, which does not exist" in str(broken)
    with pytest.raises(IdentityUnavailable, match=r"runner\.yaml is a symlink to nowhere\.yaml"):
        identity_map_from_resources(resources)


def test_a_dangling_binding_file_fails_the_snapshot_naming_it(tmp_path) -> None:
    store = _store(tmp_path)
    _dangle(store.binding_path("server", "default"))
    with pytest.raises(StoreError, match=r"server\.yaml is a symlink to nowhere\.yaml, which"):
        store.snapshot("server", "default")


def test_the_twin_a_symlink_to_a_real_file_is_read(tmp_path) -> None:
    store = _store(tmp_path)
    path = store.path("AppIdentityBinding", "runner")
    path.rename(tmp_path / "runner.yaml")
    os.symlink(tmp_path / "runner.yaml", path)
    resources = store.snapshot("server", "default").resources
    assert resources[("AppIdentityBinding", "runner")]["spec"]["appID"] == "client"
    assert len(identity_map_from_resources(resources).bindings) == 1


def test_the_twin_a_resource_that_is_not_there_is_absent(tmp_path) -> None:
    store = _store(tmp_path)
    assert store.get("Configuration", "never-written") is None
    assert store.binding("nobody", "default") is None
