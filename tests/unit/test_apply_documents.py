"""The shared apply path: validation before writing, and Dapr components we do not implement."""

from __future__ import annotations

import pytest

from sidecar.state.apply import read_documents
from sidecar.state.documents import DocumentError

STATESTORE = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: statestore}
spec:
  type: state.redis
  version: v1
  metadata: [{name: redisHost, value: "localhost:6379"}]
"""
OPA = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: opa}
spec:
  type: middleware.http.opa
  version: v1
  metadata: [{name: rego, value: "package http"}]
"""
CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: open}
spec: {accessControl: {defaultAction: allow}}
"""


def test_a_resources_folder_may_hold_dapr_components_trustmesh_ignores(tmp_path):
    (tmp_path / "statestore.yaml").write_text(STATESTORE)
    (tmp_path / "config.yaml").write_text(CONFIG)
    skipped: list[str] = []
    documents = read_documents([tmp_path], skipped=skipped)
    assert [d.name for d in documents] == ["open"]
    assert skipped == [f"{tmp_path / 'statestore.yaml'}:1: component 'statestore'"]


def test_apply_refuses_what_it_cannot_enforce(tmp_path):
    (tmp_path / "statestore.yaml").write_text(STATESTORE)
    with pytest.raises(DocumentError, match="statestore"):
        read_documents([tmp_path / "statestore.yaml"])


def test_unimplemented_middleware_is_refused_even_when_skipping(tmp_path):
    """A middleware might be attached to a pipeline: skipping it would fail open."""
    (tmp_path / "opa.yaml").write_text(OPA)
    with pytest.raises(DocumentError, match="opa"):
        read_documents([tmp_path], skipped=[])
