"""The mesh store's change detector: every change a snapshot would read changes it, and
nothing else does (sidecars poll it four times a second)."""

from __future__ import annotations

import errno
import os

import pytest

from sidecar.state.policy_builder import ConfigOverride
from sidecar.state.store import AppBinding, MeshStore, StoreError
from sidecar.state.watcher import current_signature

CONFIG = {"kind": "Configuration", "metadata": {"name": "calm"}, "spec": {}}


def _store(tmp_path) -> MeshStore:
    store = MeshStore(tmp_path)
    with store.change() as change:
        change.put("Configuration", "calm", CONFIG)
        change.put_binding(AppBinding(app_id="web", namespace="default", configuration="calm"))
    return store


def test_nothing_changed_gives_the_same_signature(tmp_path):
    store = _store(tmp_path)
    assert store.signature() == store.signature()


def test_an_empty_home_has_a_signature(tmp_path):
    assert MeshStore(tmp_path / "absent").signature() == ()


def test_a_resource_written_through_the_store_changes_it(tmp_path):
    store = _store(tmp_path)
    before = store.signature()
    with store.change() as change:
        change.put("Configuration", "other", CONFIG)
    assert store.signature() != before


def test_a_resource_edited_by_hand_in_place_changes_it(tmp_path):
    store = _store(tmp_path)
    before = store.signature()
    path = store.path("Configuration", "calm")
    stat = path.stat()
    with path.open("a") as edited:  # same inode, no rename: the directory does not change
        edited.write("# edited\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert store.signature() != before


def test_a_binding_in_a_new_namespace_changes_it(tmp_path):
    store = _store(tmp_path)
    before = store.signature()
    with store.change() as change:
        change.put_binding(AppBinding(app_id="api", namespace="payments", configuration="calm"))
    assert store.signature() != before


def test_a_resource_removed_changes_it(tmp_path):
    store = _store(tmp_path)
    before = store.signature()
    with store.change() as change:
        change.delete("Configuration", "calm")
    assert store.signature() != before


def test_files_a_snapshot_does_not_read_leave_it_alone(tmp_path):
    store = _store(tmp_path)
    before = store.signature()
    (store.root / "configurations" / "notes.txt").write_text("not a resource")
    (store.root / "configurations" / ".calm.yaml.swp").write_text("an editor's swap file")
    assert store.signature() == before


def test_a_directory_it_cannot_list_is_an_entry_not_an_error(tmp_path):
    # A symlink loop stands in for another user's 0700 directory (root reads those).
    store = _store(tmp_path)
    before = store.signature()
    os.symlink("components", store.root / "components")
    after = store.signature()  # does not raise: the poll runs on the sidecar's event loop
    assert after != before
    assert (str(store.root / "components"), "unreadable", errno.ELOOP) in after


def test_a_snapshot_refuses_a_directory_it_cannot_list(tmp_path):
    store = _store(tmp_path)
    os.symlink("components", store.root / "components")
    with pytest.raises(StoreError, match="components: cannot be listed"):
        store.snapshot("web", "default")
    (store.root / "components").unlink()  # the twin: an absent directory holds no resources
    assert store.snapshot("web", "default").binding.configuration == "calm"


def test_a_same_size_edit_in_place_with_its_mtime_put_back_changes_it(tmp_path):
    # `cp -p` (or `rsync --inplace -t`) of a template the same size: same inode, same size,
    # the source's mtime, which may well equal the old one (files checked out together).
    store = _store(tmp_path)
    path = store.path("Configuration", "calm")
    stat = path.stat()
    before = store.signature()
    path.write_text(path.read_text().replace("calm", "clam"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_ino == stat.st_ino
    assert store.signature() != before


def test_a_config_file_replaced_by_one_with_the_same_size_and_mtime_changes_it(tmp_path):
    # `rsync -a` of another variant: written beside it and renamed over it, its mtime kept.
    store = _store(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text("allow: app-a\n")
    override = ConfigOverride(source=str(config))
    stat = config.stat()
    before = current_signature(store, override)
    variant = tmp_path / "variant.yaml"
    variant.write_text("allow: app-b\n")
    os.utime(variant, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(variant, config)
    assert current_signature(store, override) != before
