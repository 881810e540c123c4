"""The one YAML reader: anchors/aliases refused at their line, size/depth/node bounds, and the
same refusal in every file kind (resources, store files, --config files, run files)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sidecar.runner.errors import RunFileError
from sidecar.runner.runfile import load_run_file, parse_run_file
from sidecar.state import yaml_loader
from sidecar.state.apply import read_documents
from sidecar.state.documents import DocumentError, load_documents
from sidecar.state.store import MeshStore, StoreError


def alias_bomb(levels: int = 8, fan_out: int = 9) -> str:
    """The review's file: a Configuration whose spec hides a 9**8-node alias tree."""
    lines = [
        "apiVersion: dapr.io/v1alpha1",
        "kind: Configuration",
        "metadata:",
        "  name: calm",
        "spec:",
        "  accessControl:",
        "    defaultAction: allow",
        "  features:",
        "    l0: &a0 [" + ",".join(["x"] * fan_out) + "]",
    ]
    for level in range(1, levels):
        lines.append(f"    l{level}: &a{level} [" + ",".join([f"*a{level - 1}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_resource_is_refused_at_the_first_anchor_with_file_and_line():
    with pytest.raises(DocumentError) as caught:
        load_documents(alias_bomb(), "bomb.yaml")
    assert str(caught.value).startswith("bomb.yaml:9: anchor &a0 refused")
    assert "anchors or aliases" in str(caught.value)


def test_a_lone_alias_to_a_plain_anchor_is_refused_too():
    text = "kind: Configuration\nmetadata: {name: x}\nspec: &s {}\nother: *s\n"
    with pytest.raises(DocumentError, match=r"^f.yaml:3: anchor &s refused"):
        load_documents(text, "f.yaml")


def test_merge_keys_need_aliases_and_are_refused():
    text = "base: &b {a: 1}\nkind: Configuration\nspec:\n  <<: *b\n"
    with pytest.raises(DocumentError, match="anchor &b refused"):
        load_documents(text, "f.yaml")


def test_plain_documents_still_load_with_their_lines():
    text = "kind: Configuration\nmetadata:\n  name: ok\n---\nkind: Component\nmetadata: {name: c}\n"
    docs = load_documents(text, "f.yaml")
    assert [(d.kind, d.name, d.line) for d in docs] == [
        ("Configuration", "ok", 1),
        ("Component", "c", 5),
    ]


def test_deep_nesting_is_refused_before_python_recursion_runs_out():
    text = "[" * 100 + "]" * 100
    with pytest.raises(DocumentError, match=r"f.yaml:1: nested deeper than 64 levels"):
        load_documents(text, "f.yaml")


def test_oversized_text_is_refused_before_parsing():
    text = "a: " + "x" * (yaml_loader.MAX_BYTES + 1)
    with pytest.raises(DocumentError, match=r"f.yaml: larger than 512 KiB"):
        load_documents(text, "f.yaml")


def test_node_count_is_bounded(monkeypatch):
    monkeypatch.setattr(yaml_loader, "MAX_NODES", 50)
    with pytest.raises(yaml_loader.YamlRefused, match="more than 50 YAML nodes"):
        yaml_loader.safe_load("[" + ",".join(["x"] * 100) + "]")


def test_cpu_time_is_bounded(monkeypatch):
    monkeypatch.setattr(yaml_loader, "MAX_SECONDS", -1.0)  # already past the budget
    with pytest.raises(yaml_loader.YamlRefused, match="CPU to read"):
        yaml_loader.safe_load("[" + ",".join(["x"] * 3000) + "]")


def test_a_store_file_replaced_by_a_bomb_is_a_store_error_naming_file_and_line(tmp_path):
    store = MeshStore(tmp_path)
    with store.change() as change:
        change.put("Configuration", "calm", {"kind": "Configuration", "spec": {}})
    store.path("Configuration", "calm").write_text(alias_bomb())
    with pytest.raises(StoreError, match=r"calm.yaml:9: anchor &a0 refused"):
        store.get("Configuration", "calm")
    snapshot = store.snapshot("app", "default")
    with pytest.raises(StoreError, match="anchor &a0 refused"):
        snapshot.get("Configuration", "calm")


def test_the_store_writes_shared_values_out_so_its_own_files_read_back(tmp_path):
    store = MeshStore(tmp_path)
    shared = {"appId": "a", "defaultAction": "allow"}
    doc = {"kind": "Configuration", "spec": {"one": shared, "two": shared}}
    with store.change() as change:
        change.put("Configuration", "twice", doc)
    assert "&" not in store.path("Configuration", "twice").read_text()
    assert store.get("Configuration", "twice") == doc


def test_run_files_refuse_anchors_with_file_and_line(tmp_path):
    text = "version: 1\napps:\n- &app {appID: a, command: [x]}\n- *app\n"
    with pytest.raises(RunFileError, match=r"dapr.yaml:3: .*anchor &app refused"):
        parse_run_file(text, tmp_path / "dapr.yaml")


def test_binary_and_huge_files_are_refused_by_name(tmp_path):
    binary = tmp_path / "image.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    with pytest.raises(DocumentError, match=r"image.yaml: is a binary file, not YAML text"):
        read_documents([binary])
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"kind: Configuration # caf\xe9\n")
    with pytest.raises(DocumentError, match=r"latin.yaml: is not UTF-8 text"):
        read_documents([latin])
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (yaml_loader.MAX_BYTES + 10))
    with pytest.raises(DocumentError, match=r"huge.yaml: larger than 512 KiB"):
        read_documents([huge])


def test_far_deeper_nesting_is_refused_too():
    with pytest.raises(DocumentError, match=r"f.yaml:1: (not valid YAML: )?\w"):
        load_documents("[" * 50000 + "]" * 50000, "f.yaml")


def test_refusals_are_yaml_errors_with_a_mark_for_existing_handlers():
    with pytest.raises(yaml.MarkedYAMLError) as caught:
        yaml_loader.compose("a: &x 1\nb: *x\n")
    assert yaml_loader.problem_text(caught.value)[0] == 1


def test_read_text_keeps_file_not_found_for_callers_that_mean_absent(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        yaml_loader.read_text(tmp_path / "missing.yaml")


def test_run_files_are_read_with_the_same_bounds(tmp_path):
    huge = tmp_path / "dapr.yaml"
    huge.write_bytes(b"#" * (yaml_loader.MAX_BYTES + 1))
    with pytest.raises(RunFileError, match=r"dapr.yaml: cannot read: larger than 512 KiB"):
        load_run_file(huge)
    huge.write_bytes(b"version: 1\n\0")
    with pytest.raises(RunFileError, match=r"dapr.yaml: cannot read: is a binary file"):
        load_run_file(tmp_path)


@pytest.fixture(params=["libyaml", "pure-python"])
def either_parser(request, monkeypatch):
    """Run a test with libyaml's events and with PyYAML's own scanner (its fallback)."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml_loader, "BoundedLoader", yaml_loader.PurePythonBoundedLoader)


def test_both_parsers_refuse_the_bomb_and_the_bounds_alike(either_parser):
    with pytest.raises(DocumentError, match=r"^bomb.yaml:9: anchor &a0 refused"):
        load_documents(alias_bomb(), "bomb.yaml")
    with pytest.raises(DocumentError, match=r"nested deeper than 64 levels"):
        load_documents("[" * 100 + "]" * 100, "f.yaml")
    docs = load_documents("kind: Configuration\nmetadata: {name: ok}\n", "f.yaml")
    assert docs[0].body == {"kind": "Configuration", "metadata": {"name": "ok"}}
