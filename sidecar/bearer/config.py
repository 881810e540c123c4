"""The bearer layer's configuration: a Dapr ``middleware.http.bearer`` Component.

Users already write this for Dapr (components-contrib ``middleware/http/bearer``)::

    apiVersion: dapr.io/v1alpha1
    kind: Component
    metadata: {name: bearer-token}
    spec:
      type: middleware.http.bearer
      version: v1
      metadata:
        - {name: issuer, value: "https://login.example.com/realms/mcp"}   # alias issuerURL
        - {name: audience, value: "mcp-server"}                           # alias clientID
        - {name: jwksURL, value: "https://login.example.com/…/certs"}     # optional: else discovery

Dapr decodes metadata names case-insensitively (dapr/kit ``DecodeMetadata``); so do we. Our own
additions are optional: ``leeway``, ``jwksRefreshInterval``, ``unknownKidRefreshInterval`` (the
least time between two refreshes asked for by tokens naming an unknown ``kid``), ``algorithms``,
``requiredTokenType`` (the JOSE ``typ`` every token must carry, e.g. ``at+jwt`` for RFC 9068
access tokens, so an ID token or another JWT from the same issuer is not accepted as one),
``allowForeignJwksHost`` (see ``discovery.py``), ``resource`` and ``resourceMetadataURL``
(RFC 9728). Where Dapr is lax we refuse instead, because
a bearer component that half-loads guards nothing: unknown names, a name given twice (``issuer`` and
``issuerURL`` both count as the issuer), ``secretKeyRef`` values and ``ignoreErrors: true``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._urls import check_url
from .errors import BearerConfigInvalid

COMPONENT_TYPE = "middleware.http.bearer"

# RFC 8725 §3.1: one family per key type, never "none", never HMAC — a verifier holding public
# keys must not accept a MAC keyed with one of them (algorithm confusion, CVE-2015-9235 class).
ALLOWED_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)

DEFAULT_LEEWAY = 60.0
MAX_LEEWAY = 300.0  # Dapr's own skew; more would keep stolen tokens alive for no reason
DEFAULT_JWKS_REFRESH_INTERVAL = 600.0  # Dapr/jwx min refresh interval, 10 minutes
MIN_JWKS_REFRESH_INTERVAL = 60.0
MAX_JWKS_REFRESH_INTERVAL = 86400.0
# A newly published key is accepted within this long; a flood of made-up kids costs the issuer
# at most one GET per interval.
DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL = 10.0
MIN_UNKNOWN_KID_REFRESH_INTERVAL = 1.0
MAX_UNKNOWN_KID_REFRESH_INTERVAL = 3600.0

# canonical field → names accepted for it (lower-cased, as Dapr matches them)
_FIELDS: dict[str, tuple[str, ...]] = {
    "issuer": ("issuer", "issuerurl"),
    "audience": ("audience", "clientid"),
    "jwks_url": ("jwksurl",),
    "leeway": ("leeway",),
    "jwks_refresh_interval": ("jwksrefreshinterval",),
    "unknown_kid_refresh_interval": ("unknownkidrefreshinterval",),
    "algorithms": ("algorithms",),
    "required_token_type": ("requiredtokentype",),
    "allow_foreign_jwks_host": ("allowforeignjwkshost",),
    "resource": ("resource",),
    "resource_metadata_url": ("resourcemetadataurl",),
}
_FIELD_OF_NAME = {alias: field for field, aliases in _FIELDS.items() for alias in aliases}


@dataclass(frozen=True, slots=True)
class BearerConfig:
    """A parsed, validated bearer component. Every allow-list the validator uses comes from here."""

    name: str  # metadata.name, what Configuration httpPipeline handlers refer to
    issuer: str  # compared to `iss` byte for byte
    audience: str  # must be one of the token's `aud` values
    jwks_url: str | None = None  # None: found by OIDC discovery from the issuer
    leeway: float = DEFAULT_LEEWAY  # seconds of clock skew forgiven on exp / nbf / iat
    jwks_refresh_interval: float = DEFAULT_JWKS_REFRESH_INTERVAL  # seconds
    # seconds between refreshes asked for by unknown kids
    unknown_kid_refresh_interval: float = DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS  # a subset of ALLOWED_ALGORITHMS
    # JOSE header `typ` every token must have (normalised: lower case, no "application/"); None:
    # not checked, as in Dapr. "at+jwt" is RFC 9068's access-token type.
    required_token_type: str | None = None
    # OIDC discovery may name a jwks_uri on another host than the issuer's only when True
    allow_foreign_jwks_host: bool = False
    resource: str | None = None  # RFC 9728 `resource`: this server's canonical URI
    resource_metadata_url: str | None = None  # where the PRM document is served
    app_scopes: tuple[str, ...] = ()  # Component `scopes`: App IDs that load it; empty = all

    def __post_init__(self) -> None:
        if not self.algorithms or not set(self.algorithms) <= set(ALLOWED_ALGORITHMS):
            raise ValueError(f"algorithms must be a non-empty subset of {ALLOWED_ALGORITHMS}")


def parse_bearer_component(doc: Mapping[str, Any]) -> BearerConfig:
    """Validate a Component document (already loaded from YAML) and return its configuration.

    Raises ``BearerConfigInvalid`` (a ``ResourceInvalid``) whose ``location`` is the dotted path of
    the offending field, e.g. ``spec.metadata[2].value``.
    """
    if not isinstance(doc, Mapping):
        raise BearerConfigInvalid("a Component must be a mapping")
    _check_envelope(doc)
    name = _component_name(doc.get("metadata"))
    spec = doc["spec"]
    values = _metadata_values(spec.get("metadata"))
    return _build_config(name, values, _app_scopes(doc.get("scopes")))


def _check_envelope(doc: Mapping[str, Any]) -> None:
    unknown = set(doc) - {"apiVersion", "kind", "metadata", "spec", "scopes", "auth"}
    if unknown:
        raise BearerConfigInvalid(f"unknown field {sorted(unknown)[0]!r}")
    if doc.get("apiVersion") != "dapr.io/v1alpha1":
        raise BearerConfigInvalid("must be 'dapr.io/v1alpha1'", location="apiVersion")
    if doc.get("kind") != "Component":
        raise BearerConfigInvalid("must be 'Component'", location="kind")
    if "auth" in doc:
        raise BearerConfigInvalid("secret stores are not supported; give values inline", "auth")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise BearerConfigInvalid("must be a mapping", location="spec")
    unknown = set(spec) - {"type", "version", "metadata", "ignoreErrors", "initTimeout"}
    if unknown:
        raise BearerConfigInvalid(f"unknown field {sorted(unknown)[0]!r}", location="spec")
    if spec.get("type") != COMPONENT_TYPE:
        raise BearerConfigInvalid(f"must be {COMPONENT_TYPE!r}", location="spec.type")
    # Dapr treats an empty version as the initial one (components.IsInitialVersion).
    if spec.get("version", "v1") not in ("v1", ""):
        raise BearerConfigInvalid("must be 'v1'", location="spec.version")
    if spec.get("ignoreErrors", False) is not False:
        raise BearerConfigInvalid(
            "a bearer component that fails to load must stop the sidecar, not be skipped",
            location="spec.ignoreErrors",
        )


def _component_name(metadata: Any) -> str:
    if not isinstance(metadata, Mapping):
        raise BearerConfigInvalid("must be a mapping with a name", location="metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise BearerConfigInvalid(
            "must be a lower-case DNS-style name (a-z, 0-9, '-', '.')", location="metadata.name"
        )
    return name


def _app_scopes(scopes: Any) -> tuple[str, ...]:
    if scopes is None:
        return ()
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        raise BearerConfigInvalid("must be a list of App IDs", location="scopes")
    return tuple(scopes)


def _metadata_values(items: Any) -> dict[str, tuple[str, str]]:
    """field → (value, location) from ``spec.metadata``, refusing unknown and repeated names."""
    if not isinstance(items, list):
        raise BearerConfigInvalid("must be a list of {name, value}", location="spec.metadata")
    values: dict[str, tuple[str, str]] = {}
    for index, item in enumerate(items):
        where = f"spec.metadata[{index}]"
        if not isinstance(item, Mapping):
            raise BearerConfigInvalid("must be a mapping with name and value", location=where)
        if "secretKeyRef" in item:
            raise BearerConfigInvalid(
                "secretKeyRef is not supported; the issuer and audience are not secrets",
                location=f"{where}.secretKeyRef",
            )
        unknown = set(item) - {"name", "value"}
        if unknown:
            raise BearerConfigInvalid(f"unknown field {sorted(unknown)[0]!r}", location=where)
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BearerConfigInvalid("must be a non-empty string", location=f"{where}.name")
        field = _FIELD_OF_NAME.get(name.lower())
        if field is None:
            known = "issuer, audience, jwksURL, leeway, jwksRefreshInterval, "
            known += "unknownKidRefreshInterval, algorithms, requiredTokenType, "
            known += "allowForeignJwksHost, resource, resourceMetadataURL"
            raise BearerConfigInvalid(
                f"unknown metadata name {name!r} (known: {known})", location=f"{where}.name"
            )
        if field in values:
            raise BearerConfigInvalid(
                f"{name!r} repeats {values[field][1]} (names and aliases are case-insensitive)",
                location=f"{where}.name",
            )
        value = item.get("value")
        if not isinstance(value, str):
            raise BearerConfigInvalid("must be a string", location=f"{where}.value")
        values[field] = (value.strip(), f"{where}.value")
    return values


def _build_config(
    name: str, values: dict[str, tuple[str, str]], app_scopes: tuple[str, ...]
) -> BearerConfig:
    def parsed(field: str, parse: Any, default: Any = None) -> Any:
        if field not in values or values[field][0] == "":
            return default
        value, location = values[field]
        try:
            return parse(value)
        except ValueError as exc:
            raise BearerConfigInvalid(str(exc), location=location) from exc

    issuer = parsed("issuer", _issuer)
    if issuer is None:
        raise BearerConfigInvalid("metadata 'issuer' (or 'issuerURL') is required", "spec.metadata")
    audience = parsed("audience", str)
    if audience is None:
        raise BearerConfigInvalid(
            "metadata 'audience' (or 'clientID') is required", "spec.metadata"
        )
    resource = parsed("resource", _resource)
    return BearerConfig(
        name=name,
        issuer=issuer,
        audience=audience,
        jwks_url=parsed("jwks_url", check_url),
        leeway=parsed("leeway", _leeway, DEFAULT_LEEWAY),
        jwks_refresh_interval=parsed(
            "jwks_refresh_interval", _refresh_interval, DEFAULT_JWKS_REFRESH_INTERVAL
        ),
        unknown_kid_refresh_interval=parsed(
            "unknown_kid_refresh_interval",
            _unknown_kid_interval,
            DEFAULT_UNKNOWN_KID_REFRESH_INTERVAL,
        ),
        algorithms=parsed("algorithms", parse_algorithms, ALLOWED_ALGORITHMS),
        required_token_type=parsed("required_token_type", token_type),
        allow_foreign_jwks_host=parsed("allow_foreign_jwks_host", _boolean, False),
        resource=resource,
        resource_metadata_url=parsed("resource_metadata_url", check_url),
        app_scopes=app_scopes,
    )


def _issuer(value: str) -> str:
    # OIDC Discovery §3: the issuer is an https URL with no query and no fragment.
    return check_url(value, allow_query=False)


def _resource(value: str) -> str:
    # RFC 8707 §2 / RFC 9728 §1.2: an absolute URI without a fragment.
    return check_url(value)


def _leeway(value: str) -> float:
    seconds = parse_duration(value)
    if seconds > MAX_LEEWAY:
        raise ValueError(f"must be at most {MAX_LEEWAY:g}s")
    return seconds


def _refresh_interval(value: str) -> float:
    seconds = parse_duration(value)
    if not MIN_JWKS_REFRESH_INTERVAL <= seconds <= MAX_JWKS_REFRESH_INTERVAL:
        raise ValueError(
            f"must be between {MIN_JWKS_REFRESH_INTERVAL:g}s and {MAX_JWKS_REFRESH_INTERVAL:g}s"
        )
    return seconds


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def token_type(value: str) -> str:
    """A JOSE ``typ`` in the form compared: lower case, without ``application/`` (RFC 7515
    §4.1.9 lets senders omit that prefix, so ``application/at+jwt`` and ``at+jwt`` are one)."""
    lowered = value.lower()
    normalised = lowered.removeprefix("application/")
    if not _MEDIA_TYPE.fullmatch(normalised):
        raise ValueError(f"{value!r} is not a media type such as 'at+jwt'")
    return normalised


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{value!r} is not 'true' or 'false'")


def _unknown_kid_interval(value: str) -> float:
    seconds = parse_duration(value)
    low, high = MIN_UNKNOWN_KID_REFRESH_INTERVAL, MAX_UNKNOWN_KID_REFRESH_INTERVAL
    if not low <= seconds <= high:
        raise ValueError(f"must be between {low:g}s and {high:g}s")
    return seconds


def parse_algorithms(value: str) -> tuple[str, ...]:
    """A comma- or space-separated subset of ``ALLOWED_ALGORITHMS``, exact case, order kept."""
    names = [part for part in re.split(r"[\s,]+", value) if part]
    if not names:
        raise ValueError("must name at least one algorithm")
    for alg in names:
        if alg not in ALLOWED_ALGORITHMS:
            raise ValueError(f"{alg!r} is not allowed (allowed: {', '.join(ALLOWED_ALGORITHMS)})")
    return tuple(dict.fromkeys(names))


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")  # longest units first: findall
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float:
    """A Go ``time.ParseDuration`` string (``90s``, ``1m30s``, ``500ms``) in seconds, ≥ 0.

    A bare number is refused: Dapr's decoder and humans disagree on its unit.
    """
    if value == "0":
        return 0.0
    if not value or not re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", value):
        raise ValueError(f"{value!r} is not a duration such as '60s', '10m' or '1m30s'")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))
