"""Dapr ``Configuration`` documents: read one into a frozen value, and write one back.

Reference: dapr/dapr ``pkg/apis/configuration/v1alpha1/types.go`` (``ConfigurationSpec``,
``PipelineSpec``, ``HandlerSpec``) and the hosted product's ``configuration create`` command.

We act on ``spec.accessControl`` (see :mod:`.acl`) and on the two middleware pipelines. Every
other ``spec`` key Dapr defines is accepted so existing files load, kept verbatim so writing the
document back loses nothing, and otherwise ignored; they are listed in :data:`IGNORED_SPEC_FIELDS`
so that a typo such as ``acessControl`` is still refused rather than ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from identity import IdentityError, validate_app_id

from ..errors import ResourceInvalid
from .acl import DEFAULT_TRUST_DOMAIN, AccessControl
from .acl_fields import check_keys, optional_list, optional_mapping, optional_str, required_str
from .acl_parse import parse_access_control

API_VERSION = "dapr.io/v1alpha1"
KIND = "Configuration"
DOCUMENT_FIELDS = ("apiVersion", "kind", "metadata", "spec")
METADATA_FIELDS = ("name", "namespace", "labels", "annotations")
# Fields the Kubernetes API server adds to every object (kubectl get -o yaml): harmless, ignored.
METADATA_SERVER_FIELDS = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
)
SPEC_FIELDS = ("accessControl", "httpPipeline", "appHttpPipeline")
IGNORED_SPEC_FIELDS = (
    "tracing",
    "metric",
    "metrics",
    "mtls",
    "secrets",
    "nameResolution",
    "features",
    "api",
    "components",
    "logging",
    "wasm",
    "workflow",
)
PIPELINE_FIELDS = ("handlers",)
HANDLER_FIELDS = ("name", "type", "version")

# RFC 1123 label, as Kubernetes names most objects; the name also becomes a file name locally.
_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME_CHARS = 63


def _no_fields() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Handler:
    """One middleware of a pipeline: the ``name`` of a Component and its ``type``."""

    name: str
    type: str  # e.g. "middleware.http.bearer"
    version: str | None = None  # Dapr's optional component version, e.g. "v1"


@dataclass(frozen=True, slots=True)
class Configuration:
    """A parsed Configuration. ``access_control`` None means no ACL: every caller is allowed."""

    name: str
    access_control: AccessControl | None = None
    http_pipeline: tuple[Handler, ...] = ()
    app_http_pipeline: tuple[Handler, ...] = ()
    namespace: str | None = None  # metadata.namespace, when given
    # Dapr spec keys we do not act on, deep-frozen and written back verbatim.
    ignored_spec: Mapping[str, Any] = field(default_factory=_no_fields, hash=False)


def validate_configuration_name(name: object, location: str = "metadata.name") -> str:
    """A Configuration name: a DNS label (lower-case letters, digits, '-'), at most 63 chars."""
    if not isinstance(name, str) or not name:
        raise ResourceInvalid("missing name: a Configuration needs metadata.name", location)
    if len(name) > MAX_NAME_CHARS or not _NAME_RE.fullmatch(name):
        raise ResourceInvalid(
            f"invalid name {name!r}: use at most {MAX_NAME_CHARS} lower-case letters, digits "
            "and '-', starting and ending with a letter or digit",
            location,
        )
    return name


def parse_configuration(doc: Mapping[str, Any]) -> Configuration:
    """Validate a loaded Configuration document and return its frozen value."""
    if not isinstance(doc, Mapping):
        raise ResourceInvalid(f"a Configuration must be a mapping, not {type(doc).__name__}")
    check_keys(doc, DOCUMENT_FIELDS, "")
    api_version = optional_str(doc, "apiVersion", "")
    if api_version != API_VERSION:
        raise ResourceInvalid(f"must be {API_VERSION!r}, not {api_version!r}", "apiVersion")
    kind = optional_str(doc, "kind", "")
    if kind != KIND:
        raise ResourceInvalid(f"must be {KIND!r}, not {kind!r}", "kind")

    metadata = optional_mapping(doc, "metadata", "")
    if metadata is None:
        raise ResourceInvalid("missing metadata: a Configuration needs metadata.name", "metadata")
    check_keys(
        {k: v for k, v in metadata.items() if k not in METADATA_SERVER_FIELDS},
        METADATA_FIELDS,
        "metadata",
    )
    name = validate_configuration_name(metadata.get("name"))
    namespace = optional_str(metadata, "namespace", "metadata")
    for key in ("labels", "annotations"):
        optional_mapping(metadata, key, "metadata")

    spec = optional_mapping(doc, "spec", "") or {}
    check_keys(spec, SPEC_FIELDS + IGNORED_SPEC_FIELDS, "spec")
    return Configuration(
        name=name,
        access_control=parse_access_control(optional_mapping(spec, "accessControl", "spec")),
        http_pipeline=_parse_pipeline(spec, "httpPipeline"),
        app_http_pipeline=_parse_pipeline(spec, "appHttpPipeline"),
        namespace=namespace,
        ignored_spec=_freeze({k: spec[k] for k in IGNORED_SPEC_FIELDS if k in spec}),
    )


def _parse_pipeline(spec: Mapping[str, Any], key: str) -> tuple[Handler, ...]:
    where = f"spec.{key}"
    pipeline = optional_mapping(spec, key, "spec")
    if pipeline is None:
        return ()
    check_keys(pipeline, PIPELINE_FIELDS, where)
    handlers = []
    for index, raw in enumerate(optional_list(pipeline, "handlers", where) or ()):
        at = f"{where}.handlers[{index}]"
        if not isinstance(raw, Mapping):
            raise ResourceInvalid(f"a handler must be a mapping, not {type(raw).__name__}", at)
        check_keys(raw, HANDLER_FIELDS, at)
        handlers.append(
            Handler(
                name=required_str(raw, "name", at, "missing name: the Component's metadata.name"),
                type=required_str(raw, "type", at, "missing type, e.g. middleware.http.bearer"),
                version=optional_str(raw, "version", at),
            )
        )
    return tuple(handlers)


def configuration_to_document(config: Configuration) -> dict[str, Any]:
    """The Configuration as a plain document; :func:`parse_configuration` reads it back equal.

    Every policy is written with its ``trustDomain`` and ``namespace`` (Dapr requires them), and
    the resolved global ``defaultAction`` is written explicitly, so the file means the same thing
    whoever reads it.
    """
    metadata: dict[str, Any] = {"name": config.name}
    if config.namespace is not None:
        metadata["namespace"] = config.namespace
    spec: dict[str, Any] = {}
    if config.access_control is not None:
        spec["accessControl"] = _access_control_to_document(config.access_control)
    if config.http_pipeline:
        spec["httpPipeline"] = {"handlers": [_handler(h) for h in config.http_pipeline]}
    if config.app_http_pipeline:
        spec["appHttpPipeline"] = {"handlers": [_handler(h) for h in config.app_http_pipeline]}
    spec.update(_thaw(config.ignored_spec))
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def _access_control_to_document(acl: AccessControl) -> dict[str, Any]:
    policies = []
    for policy in acl.policies:
        entry: dict[str, Any] = {"appId": policy.app_id}
        if policy.default_action is not None:
            entry["defaultAction"] = policy.default_action
        entry["trustDomain"] = policy.trust_domain
        entry["namespace"] = policy.namespace
        if policy.operations:
            entry["operations"] = [
                {"name": op.name, "httpVerb": list(op.http_verbs), "action": op.action}
                for op in policy.operations
            ]
        policies.append(entry)
    return {
        "defaultAction": acl.default_action,
        "trustDomain": acl.trust_domain,
        "policies": policies,
    }


def _handler(handler: Handler) -> dict[str, str]:
    entry = {"name": handler.name, "type": handler.type}
    if handler.version is not None:
        entry["version"] = handler.version
    return entry


def build_configuration(
    name: str,
    default_action: str,
    policies: list[tuple[str, str]],
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    namespace: str = "default",
) -> Configuration:
    """What ``trustmesh configuration create NAME --default-action A --policy APP:ACTION…`` means.

    Each ``(app_id, action)`` becomes ``{appId, defaultAction: action, trustDomain, namespace}``;
    ``trust_domain`` is also the top-level one. The document is built and then read back through
    :func:`parse_configuration`, so the CLI can only write what the sidecar accepts.
    """
    entries = []
    for index, (app_id, action) in enumerate(policies):
        try:
            validate_app_id(app_id)
        except IdentityError as exc:
            raise ResourceInvalid(str(exc), f"spec.accessControl.policies[{index}].appId") from exc
        entries.append(
            {
                "appId": app_id,
                "defaultAction": action,
                "trustDomain": trust_domain,
                "namespace": namespace,
            }
        )
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "accessControl": {
                "defaultAction": default_action,
                "trustDomain": trust_domain,
                "policies": entries,
            }
        },
    }
    return parse_configuration(doc)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value
