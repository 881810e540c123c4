"""Which App a SPIFFE ID is: the mesh's identity map.

trustmesh keys everything (ACLs, tool grants, sessions, audit) on namespace + App ID. The
bundled CA issues the Dapr form ``spiffe://<td>/ns/<ns>/<app-id>``, but SPIRE's default
``ClusterSPIFFEID`` template and cert-manager's csi-driver-spiffe issue
``spiffe://<td>/ns/<ns>/sa/<service-account>`` and nothing else. The map turns either into an
:class:`AppIdentity` that keeps the SPIFFE ID it came from, so nothing downstream changes its keys
and audit still names the certificate's real ID.

Rules, in order (a pure function of the SPIFFE ID and the bindings):

1. an explicit binding for exactly this SPIFFE ID names the App ID (and namespace);
2. otherwise the Dapr form maps to its App ID, the ServiceAccount form to the ServiceAccount name;
3. an App ID that is bound explicitly is held by its bound SPIFFE ID *only*: a workload whose
   default form would land on that App ID is refused, so a binding can never be shadowed by
   whoever may pick that ServiceAccount name;
4. anything else is not an App identity (refused, naming the form expected).

The reverse, :meth:`IdentityMap.spiffe_ids_for`, lists the SPIFFE IDs that hold an App ID; the
outbound peer check requires the answering sidecar to present one of exactly those.

A sidecar installs its mesh's map once at start and swaps it whole when the bindings change
(:func:`install_identity_map`); certificate readers (:func:`identity.peer_identity`) consult it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import IdentityError, NotAnAppIdentity
from ._spiffe_id import (
    DEFAULT_NAMESPACE,
    AppIdentity,
    SpiffeId,
    validate_app_id,
    validate_namespace,
)

SERVICE_ACCOUNT_SEGMENT = "sa"
BINDING_KIND = "AppIdentityBinding"
BINDING_API_VERSIONS = ("trustmesh.dev/v1alpha1",)


class IdentityMapError(IdentityError):
    """Bindings that contradict each other, or a binding document that does not parse."""

    code = "IDENTITY_MAP_INVALID"


@dataclass(frozen=True, slots=True)
class IdentityBinding:
    """``spiffe_id`` is App ``app_id`` in ``namespace`` (one explicit line of the map)."""

    spiffe_id: SpiffeId
    namespace: str
    app_id: str

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)
        validate_app_id(self.app_id)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.spiffe_id.trust_domain, self.namespace, self.app_id)


def default_app_key(spiffe_id: SpiffeId) -> tuple[str, str] | None:
    """(namespace, App ID) of the Dapr or ServiceAccount form, or None for any other path."""
    segments = spiffe_id.segments
    if len(segments) == 3 and segments[0] == "ns":
        return segments[1], segments[2]
    if len(segments) == 4 and segments[0] == "ns" and segments[2] == SERVICE_ACCOUNT_SEGMENT:
        return segments[1], segments[3]
    return None


class IdentityMap:
    """SPIFFE ID → App identity, and back. Immutable once built; build a new one to change it."""

    def __init__(self, bindings: Iterable[IdentityBinding] = ()) -> None:
        by_id: dict[SpiffeId, IdentityBinding] = {}
        by_app: dict[tuple[str, str, str], IdentityBinding] = {}
        for binding in bindings:
            earlier = by_id.get(binding.spiffe_id)
            if earlier is not None and earlier != binding:
                raise IdentityMapError(
                    f"{binding.spiffe_id} is bound twice: to {earlier.app_id!r} in "
                    f"{earlier.namespace!r} and to {binding.app_id!r} in {binding.namespace!r}"
                )
            other = by_app.get(binding.key)
            if other is not None and other.spiffe_id != binding.spiffe_id:
                raise IdentityMapError(
                    f"App ID {binding.app_id!r} in namespace {binding.namespace!r} is bound to "
                    f"both {other.spiffe_id} and {binding.spiffe_id}: one SPIFFE ID per App ID"
                )
            by_id[binding.spiffe_id] = binding
            by_app[binding.key] = binding
        self._by_id = by_id
        self._by_app = by_app

    @property
    def bindings(self) -> tuple[IdentityBinding, ...]:
        return tuple(self._by_id.values())

    def app_identity(self, spiffe_id: SpiffeId | str) -> AppIdentity:
        """The App this SPIFFE ID is, carrying the ID itself; raise if it is none."""
        sid = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        bound = self._by_id.get(sid)
        if bound is not None:
            return AppIdentity(sid.trust_domain, bound.namespace, bound.app_id, source=sid)
        key = default_app_key(sid)
        if key is None:
            raise NotAnAppIdentity(
                f"{sid} is not an App ID: expected spiffe://<trust-domain>/ns/<namespace>/"
                "<app-id>, .../ns/<namespace>/sa/<service-account>, or an AppIdentityBinding"
            )
        namespace, app_id = key
        try:
            identity = AppIdentity(sid.trust_domain, namespace, app_id, source=sid)
        except NotAnAppIdentity as exc:
            raise NotAnAppIdentity(
                f"{sid} does not name a usable App ID ({exc}); bind it with an AppIdentityBinding"
            ) from exc
        owner = self._by_app.get((sid.trust_domain, namespace, app_id))
        if owner is not None:
            raise NotAnAppIdentity(
                f"{sid} may not act as App ID {app_id!r} in namespace {namespace!r}: that App ID "
                f"is bound to {owner.spiffe_id}"
            )
        return identity

    def spiffe_ids_for(self, app: AppIdentity) -> tuple[SpiffeId, ...]:
        """Every SPIFFE ID that holds ``app``: its binding alone, or its two default forms."""
        bound = self._by_app.get((app.trust_domain, app.namespace, app.app_id))
        if bound is not None:
            return (bound.spiffe_id,)
        return (
            SpiffeId.from_parts(app.trust_domain, "ns", app.namespace, app.app_id),
            SpiffeId.from_parts(
                app.trust_domain, "ns", app.namespace, SERVICE_ACCOUNT_SEGMENT, app.app_id
            ),
        )

    def holds(self, spiffe_id: SpiffeId, app: AppIdentity) -> bool:
        return spiffe_id in self.spiffe_ids_for(app)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdentityMap) and self._by_id == other._by_id

    __hash__ = None  # type: ignore[assignment]


def parse_binding(document: Mapping[str, Any]) -> IdentityBinding:
    """An ``AppIdentityBinding`` document::

    apiVersion: trustmesh.dev/v1alpha1
    kind: AppIdentityBinding
    metadata: {name: agent-runner}
    spec:
      spiffeID: spiffe://example.org/ns/agents/sa/runner
      appID: research-agent
      namespace: agents        # default: the SPIFFE ID's namespace, else "default"
    """
    if document.get("kind") != BINDING_KIND:
        raise IdentityMapError(f"kind must be {BINDING_KIND!r}")
    if document.get("apiVersion") not in BINDING_API_VERSIONS:
        raise IdentityMapError(f"apiVersion must be one of {', '.join(BINDING_API_VERSIONS)}")
    spec = document.get("spec")
    if not isinstance(spec, Mapping):
        raise IdentityMapError("spec must be a mapping")
    unknown = set(spec) - {"spiffeID", "appID", "namespace"}
    if unknown:
        raise IdentityMapError(f"spec: unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    raw_id, app_id = spec.get("spiffeID"), spec.get("appID")
    if not isinstance(raw_id, str) or not isinstance(app_id, str):
        raise IdentityMapError("spec.spiffeID and spec.appID are required strings")
    try:
        sid = SpiffeId.parse(raw_id)
    except IdentityError as exc:
        raise IdentityMapError(f"spec.spiffeID: {exc}") from exc
    default_key = default_app_key(sid)
    namespace = spec.get("namespace", default_key[0] if default_key else DEFAULT_NAMESPACE)
    if not isinstance(namespace, str):
        raise IdentityMapError("spec.namespace must be a string")
    try:
        return IdentityBinding(sid, namespace, app_id)
    except IdentityError as exc:
        raise IdentityMapError(f"spec: {exc}") from exc


DEFAULT_IDENTITY_MAP = IdentityMap()
_current: IdentityMap = DEFAULT_IDENTITY_MAP


def install_identity_map(identity_map: IdentityMap) -> None:
    """Make ``identity_map`` the one certificate readers use (swapped whole, never edited)."""
    global _current
    _current = identity_map


def current_identity_map() -> IdentityMap:
    return _current


def app_identity_of(spiffe_id: SpiffeId | str) -> AppIdentity:
    """The App identity ``spiffe_id`` holds under the installed map."""
    return _current.app_identity(spiffe_id)
