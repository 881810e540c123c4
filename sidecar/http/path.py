r"""One normalisation of the request path, used for policy *and* for forwarding.

CVE-2026-41491 (GHSA-85gx-3qv6-4463) was Dapr checking a normalised path while the app received
the raw one: ``admin%2F..%2Fpublic`` was checked as ``public`` and served as ``admin/../public``.
The fix, which we follow, is to normalise once at the edge and hand the *same* string to the ACL
and to the app:

1. percent-decode the path (as Go's ``r.URL.Path`` does, so ``%2F`` is a real ``/``); a malformed
   escape or bytes that are not UTF-8 are refused;
2. refuse ``#``, ``?`` and NUL (after decoding they can only come from ``%23``/``%3F``/``%00``),
   and any other control character;
3. resolve ``.``, ``..`` and ``//`` like Go's ``path.Clean``, then drop leading ``../`` (a method
   cannot climb above the app's root);
4. refuse what is still an encoded separator or dot after that one decode (``%2F``, ``%5C``,
   ``%2E`` in any case: ``admin%252Fsecret``) and backslashes, as newest Dapr does
   (``aclencoded.go``): an app that decodes twice, or treats ``\`` as ``/``, would otherwise
   route a path other than the one that was checked;
5. re-encode for the wire, so the app decodes exactly the string that was checked.

The result (Dapr calls it the *method*) has no leading slash: ``/v1.0/invoke/x/method/a/b`` and an
inbound ``/a/b`` both give ``a/b``, which is what the ACL sees and what Dapr prints in its denials.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote

from ..errors import SidecarError

MAX_TARGET_BYTES = 8192

_PERCENT_RE = re.compile(rb"%([0-9A-Fa-f]{2})")
_STILL_ENCODED_RE = re.compile(r"%(2[fFeE]|5[cC])")
# Characters left unescaped when the checked method is put back on the wire: RFC 3986 pchar minus
# ';' (path parameters in some servers) and '%' (always re-escaped so the app decodes once).
_WIRE_SAFE = "/!$&'()*+,=:@"


class InvalidPath(SidecarError):
    """The request target cannot be normalised; the request is refused before any policy."""

    code = "ERR_MALFORMED_REQUEST"
    http_status = 400


class TargetTooLong(InvalidPath):
    code = "ERR_URI_TOO_LONG"
    http_status = 414


@dataclass(frozen=True, slots=True)
class RequestTarget:
    method: str  # normalised, decoded, no leading slash: what policy sees
    query: bytes  # raw query string without '?', forwarded unchanged

    @property
    def wire_path(self) -> bytes:
        """The request target to send onward: ``/`` + the re-encoded method + query."""
        if len(self.method) + len(self.query) <= _CACHED_TARGET:
            return _wire_path_cached(self.method, self.query)
        return _wire_path(self.method, self.query)


def _wire_path(method: str, query: bytes) -> bytes:
    encoded = ("/" + quote(method, safe=_WIRE_SAFE)).encode("ascii")
    return encoded + b"?" + query if query else encoded


# Targets are pure functions of their bytes, and the same few come every request: each is
# normalised and re-encoded once. Only short ones are kept (a caller sending ever-new long
# paths only causes misses), and a target that fails to parse raises and is not kept.
_CACHED_TARGET = 512
_wire_path_cached = functools.lru_cache(maxsize=1024)(_wire_path)


def percent_decode(raw: bytes) -> str:
    """Strict percent-decoding: a ``%`` not followed by two hex digits is an error."""
    if b"%" in _PERCENT_RE.sub(b"", raw):
        raise InvalidPath("invalid method: malformed percent-encoding in path")
    decoded = _PERCENT_RE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("invalid method: path is not valid UTF-8 once decoded") from None


def clean(path: str) -> str:
    """Go's ``path.Clean``: the shortest path equivalent to ``path`` by lexical processing."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    joined = "/".join(out)
    if rooted:
        return "/" + joined
    return joined or "."


def normalize_method(method: str) -> str:
    """Dapr's ``NormalizeMethod`` (post-CVE): refuse, clean, and keep the app's root."""
    for forbidden in ("#", "?", "\x00"):
        if forbidden in method:
            raise InvalidPath(f"invalid method: method contains forbidden character: {method!r}")
    for position, char in enumerate(method):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise InvalidPath(
                f"invalid method: method contains control character at position {position}: "
                f"{method!r}"
            )
    if "\\" in method:
        raise InvalidPath(f"invalid method: backslash is not allowed in a method: {method!r}")
    encoded = _STILL_ENCODED_RE.search(method)
    if encoded is not None:
        raise InvalidPath(
            f"invalid method: {encoded.group(0)!r} is still percent-encoded after decoding "
            f"(double encoding): {method!r}"
        )
    cleaned = clean(method)
    while cleaned.startswith("../"):
        cleaned = cleaned[3:]
    if cleaned in ("..", "."):
        return ""
    # A rooted input ("/admin", from ".../method//admin") stays rooted through Clean. The method
    # never starts with a slash, or the wire path would begin "//", which parsers read as a host.
    return cleaned.lstrip("/")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split an origin-form request target into raw path and raw query."""
    if len(target) > MAX_TARGET_BYTES:
        raise TargetTooLong(f"request target is longer than {MAX_TARGET_BYTES} bytes")
    if not target.startswith(b"/"):
        raise InvalidPath("request target must be in origin form (start with '/')")
    if b"#" in target:
        # RFC 9112 §3.2: a request target carries no fragment. Passed on raw, an app's router
        # and the policy could disagree on where the path or query ends.
        raise InvalidPath("request target must not contain '#' (a fragment)")
    path, _, query = target.partition(b"?")
    return path, query


def normalize_target(target: bytes) -> RequestTarget:
    """Normalise a full origin-form target (inbound side: the whole path is the method)."""
    if len(target) <= _CACHED_TARGET:
        return _normalize_target_cached(target)
    return _normalize_target(target)


def _normalize_target(target: bytes) -> RequestTarget:
    raw_path, query = split_target(target)
    return RequestTarget(normalize_method(percent_decode(raw_path).lstrip("/")), query)


_normalize_target_cached = functools.lru_cache(maxsize=1024)(_normalize_target)
