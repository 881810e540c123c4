"""SPIFFE IDs and the App identities trustmesh builds from them.

The rules are those of the SPIFFE ID specification (spiffe/spiffe, standards/SPIFFE-ID.md §2),
checked in the same order as go-spiffe so that an ID one accepts the other accepts too:

* scheme ``spiffe://``, lower case;
* trust domain of ``[a-z0-9._-]``, at most 255 bytes, no port, no userinfo;
* path of ``/``-separated segments of ``[A-Za-z0-9._-]``; no empty, ``.`` or ``..`` segment, no
  trailing slash; no query or fragment; no percent-encoding (``%`` is not in the alphabet);
* the whole ID at most 2048 bytes.

Everything is matched with ``re.fullmatch``: py-spiffe once accepted a trailing newline because
``$`` matches before one.

An :class:`AppIdentity` is trust domain + namespace + App ID. Its canonical SPIFFE ID is the Dapr
form ``spiffe://<td>/ns/<namespace>/<app-id>``; one read off a certificate through the mesh's
identity map (``_mapping``) also carries the SPIFFE ID it came from (e.g. SPIRE's
``.../ns/<ns>/sa/<service-account>``), which is what it prints as. Equality and hashing use the
three mapped parts only, so ACLs, grants and sessions keep one key per App.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._errors import InvalidSpiffeId, NotAnAppIdentity

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
MAX_APP_ID_CHARS = 64  # Dapr Sentry's limit for App IDs

_TRUST_DOMAIN_RE = re.compile(r"[a-z0-9._-]+")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9._-]+")

DEFAULT_TRUST_DOMAIN = "public"
DEFAULT_NAMESPACE = "default"


def validate_trust_domain(name: str) -> str:
    """Return ``name`` if it is a valid trust domain name, else raise naming the rule."""
    if not name:
        raise InvalidSpiffeId("trust domain is missing")
    if "@" in name:
        raise InvalidSpiffeId(f"trust domain cannot contain userinfo: {name!r}")
    if ":" in name:
        raise InvalidSpiffeId(f"trust domain cannot contain a port: {name!r}")
    if not _TRUST_DOMAIN_RE.fullmatch(name):
        raise InvalidSpiffeId(
            "trust domain characters are limited to lowercase letters, numbers, dots, "
            f"dashes, and underscores: {name!r}"
        )
    if len(name.encode()) > MAX_TRUST_DOMAIN_BYTES:
        raise InvalidSpiffeId(f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes")
    return name


def validate_path_segment(segment: str) -> str:
    """Return ``segment`` if it may stand between two slashes of a SPIFFE ID path."""
    if segment == "":
        raise InvalidSpiffeId("path cannot contain empty segments")
    if segment in (".", ".."):
        raise InvalidSpiffeId("path cannot contain dot segments")
    if not _SEGMENT_RE.fullmatch(segment):
        raise InvalidSpiffeId(
            "path segment characters are limited to letters, numbers, dots, dashes, "
            f"and underscores: {segment!r}"
        )
    return segment


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A validated SPIFFE ID. Construct with :meth:`parse` or :meth:`from_parts`."""

    trust_domain: str
    path: str  # "" or "/seg/seg…"

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if self.path:
            if not self.path.startswith("/"):
                raise InvalidSpiffeId("path must start with '/'")
            if self.path.endswith("/"):
                raise InvalidSpiffeId("path cannot have a trailing slash")
            for segment in self.path[1:].split("/"):
                validate_path_segment(segment)
        if len(str(self).encode()) > MAX_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        if not isinstance(text, str):
            raise InvalidSpiffeId(f"SPIFFE ID must be a string, not {type(text).__name__}")
        if text == "":
            raise InvalidSpiffeId("SPIFFE ID cannot be empty")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
            raise InvalidSpiffeId(f"SPIFFE ID is longer than {MAX_ID_BYTES} bytes")
        if not text.startswith(SCHEME_PREFIX):
            raise InvalidSpiffeId(
                "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"
            )
        rest = text[len(SCHEME_PREFIX) :]
        if "#" in rest:
            raise InvalidSpiffeId("SPIFFE ID cannot contain a fragment")
        if "?" in rest:
            raise InvalidSpiffeId("SPIFFE ID cannot contain a query")
        trust_domain, slash, path = rest.partition("/")
        if not trust_domain:
            raise InvalidSpiffeId("trust domain is missing")
        if slash and not path:
            raise InvalidSpiffeId("path cannot have a trailing slash")
        return cls(trust_domain, slash + path)

    @classmethod
    def from_parts(cls, trust_domain: str, *segments: str) -> SpiffeId:
        for segment in segments:
            validate_path_segment(segment)
        return cls(trust_domain, "".join("/" + s for s in segments))

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"


def validate_app_id(app_id: str) -> str:
    """App IDs are single SPIFFE path segments without dots (``id.ns`` addresses a namespace)."""
    if not isinstance(app_id, str) or app_id == "":
        raise NotAnAppIdentity("app ID cannot be empty")
    try:
        validate_path_segment(app_id)
    except InvalidSpiffeId as exc:
        raise NotAnAppIdentity(f"invalid app ID {app_id!r}: {exc}") from exc
    if "." in app_id:
        raise NotAnAppIdentity(
            f"invalid app ID {app_id!r}: dots are reserved for '<app-id>.<namespace>' addressing"
        )
    if len(app_id) > MAX_APP_ID_CHARS:
        raise NotAnAppIdentity(f"invalid app ID {app_id!r}: longer than {MAX_APP_ID_CHARS} chars")
    return app_id


def validate_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or namespace == "":
        raise NotAnAppIdentity("namespace cannot be empty")
    try:
        validate_path_segment(namespace)
    except InvalidSpiffeId as exc:
        raise NotAnAppIdentity(f"invalid namespace {namespace!r}: {exc}") from exc
    if "." in namespace:
        raise NotAnAppIdentity(f"invalid namespace {namespace!r}: dots are not allowed")
    return namespace


@dataclass(frozen=True, slots=True)
class AppIdentity:
    """Who an app is in the mesh: ``spiffe://<trust_domain>/ns/<namespace>/<app_id>``.

    App IDs are case-sensitive, as in Dapr. Comparing two identities compares all three parts;
    ``source`` (the SPIFFE ID a certificate presented, when it is not the Dapr form) is carried
    for display and audit, never compared.
    """

    trust_domain: str
    namespace: str
    app_id: str
    source: SpiffeId | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            validate_trust_domain(self.trust_domain)
        except InvalidSpiffeId as exc:
            raise NotAnAppIdentity(str(exc)) from exc
        validate_namespace(self.namespace)
        validate_app_id(self.app_id)

    @classmethod
    def from_spiffe_id(cls, spiffe_id: SpiffeId | str) -> AppIdentity:
        sid = SpiffeId.parse(spiffe_id) if isinstance(spiffe_id, str) else spiffe_id
        segments = sid.segments
        if len(segments) != 3 or segments[0] != "ns":
            raise NotAnAppIdentity(
                f"{sid} is not an App ID: expected spiffe://<trust-domain>/ns/<namespace>/<app-id>"
            )
        return cls(sid.trust_domain, segments[1], segments[2])

    @property
    def spiffe_id(self) -> SpiffeId:
        """The SPIFFE ID this identity was presented as (the Dapr form when built from parts)."""
        if self.source is not None:
            return self.source
        return SpiffeId.from_parts(self.trust_domain, "ns", self.namespace, self.app_id)

    def __str__(self) -> str:
        if self.source is not None:
            return str(self.source)
        return f"{SCHEME_PREFIX}{self.trust_domain}/ns/{self.namespace}/{self.app_id}"
