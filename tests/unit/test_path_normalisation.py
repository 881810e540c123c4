"""One normalisation of the request path, for policy and for forwarding (CVE-2026-41491).

Tables transcribed from Go's ``src/path/path_test.go`` (``cleantests``), from dapr/dapr
``pkg/messaging/method/normalize_test.go`` and from the HTTP integration suite
``tests/integration/suite/daprd/serviceinvocation/http/reservedchars/`` (``acl.go``,
``pathcorrectness.go``, ``aclencoded.go``), then hypothesis properties of the whole pipeline.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sidecar.http.path import (
    MAX_TARGET_BYTES,
    InvalidPath,
    RequestTarget,
    TargetTooLong,
    clean,
    normalize_method,
    normalize_target,
    percent_decode,
    split_target,
)

FAST = settings(max_examples=300, deadline=None)

# --- Go path.Clean ----------------------------------------------------------------------------

GO_CLEAN_TESTS = [
    # Already clean
    ("", "."),
    ("abc", "abc"),
    ("abc/def", "abc/def"),
    ("a/b/c", "a/b/c"),
    (".", "."),
    ("..", ".."),
    ("../..", "../.."),
    ("../../abc", "../../abc"),
    ("/abc", "/abc"),
    ("/", "/"),
    # Remove trailing slash
    ("abc/", "abc"),
    ("abc/def/", "abc/def"),
    ("a/b/c/", "a/b/c"),
    ("./", "."),
    ("../", ".."),
    ("../../", "../.."),
    ("/abc/", "/abc"),
    # Remove doubled slash
    ("abc//def//ghi", "abc/def/ghi"),
    ("//abc", "/abc"),
    ("///abc", "/abc"),
    ("//abc//", "/abc"),
    ("abc//", "abc"),
    # Remove . elements
    ("abc/./def", "abc/def"),
    ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"),
    # Remove .. elements
    ("abc/def/ghi/../jkl", "abc/def/jkl"),
    ("abc/def/../ghi/../jkl", "abc/jkl"),
    ("abc/def/..", "abc"),
    ("abc/def/../..", "."),
    ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."),
    ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
    # Combinations
    ("abc/./../def", "def"),
    ("abc//./../def", "def"),
    ("abc/../../././../def", "../../def"),
]


@pytest.mark.parametrize(("path", "expected"), GO_CLEAN_TESTS)
def test_clean_matches_go_path_clean(path, expected):
    assert clean(path) == expected
    # Go's TestClean also checks that a clean path is a fixed point.
    assert clean(expected) == expected


# --- Dapr NormalizeMethod ---------------------------------------------------------------------

DAPR_NORMALIZE_ACCEPTS = [
    # pkg/messaging/method/normalize_test.go
    ("test%stream", "test%stream"),  # allows percent
    ("test%25stream", "test%25stream"),  # percent-encoded sequences stay raw (no decoding)
    ('test"stream', 'test"stream'),
    ("test*stream", "test*stream"),
    ("admin/../public", "public"),  # resolves traversal
    ("../../etc/passwd", "etc/passwd"),  # resolves leading traversal
    ("mymethod", "mymethod"),
    ("api/v1/users", "api/v1/users"),
    # notes §1.7 step 3: '..' and '.' become the empty method
    ("..", ""),
    (".", ""),
    ("", ""),
    ("../..", ""),
    ("a/../..", ""),
    ("a/..", ""),
    ("../../../x/../y", "y"),
    ("public///extra", "public/extra"),
    ("a/b/c/../../../public", "public"),
    ("admin/secret/../../public", "public"),
    ("public/../public", "public"),
    ("...", "..."),  # not a dot segment
    ("a/.../b", "a/.../b"),
    ("é/ü", "é/ü"),
]


@pytest.mark.parametrize(("method", "expected"), DAPR_NORMALIZE_ACCEPTS)
def test_normalize_method_accepts(method, expected):
    assert normalize_method(method) == expected


DAPR_NORMALIZE_REFUSES = [
    # (method, the message's distinctive part)
    ("test#stream", "forbidden character"),
    ("test?stream", "forbidden character"),
    ("test\x00stream", "forbidden character"),
    ("test\x01stream", "control character at position 4"),
    ("test\tstream", "control character at position 4"),
    ("test\nstream", "control character at position 4"),
    ("test\rstream", "control character at position 4"),
    ("\x1f", "control character at position 0"),
    ("ab\x7f", "control character at position 2"),
    # '#' hides traversal after an allowed prefix (reservedchars/acl.go, decoded form)
    ("public#/../admin", "forbidden character"),
    ("public?/../admin", "forbidden character"),
]


@pytest.mark.parametrize(("method", "fragment"), DAPR_NORMALIZE_REFUSES)
def test_normalize_method_refuses(method, fragment):
    with pytest.raises(InvalidPath) as caught:
        normalize_method(method)
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("invalid method: ")
    assert caught.value.http_status == 400


def test_normalize_method_refusal_names_the_method_exactly():
    with pytest.raises(InvalidPath) as caught:
        normalize_method("a\x01b")
    assert str(caught.value) == (
        "invalid method: method contains control character at position 1: 'a\\x01b'"
    )


def test_normalize_method_allows_c1_and_high_characters():
    # Only C0 controls and DEL are refused, as in Dapr (bytes < 0x20 or == 0x7f).
    assert normalize_method("a\u0085b") == "a\u0085b"
    assert normalize_method("a\u00a0b") == "a\u00a0b"


# --- percent-decoding -------------------------------------------------------------------------

PERCENT_DECODES = [
    (b"/a%2Fb", "/a/b"),  # %2F is a real slash, as in Go's r.URL.Path
    (b"/a%2fb", "/a/b"),
    (b"/%2e%2e/x", "/../x"),
    (b"/%2E%2E%2Fx", "/../x"),
    (b"/a%25b", "/a%b"),  # %25 is a literal percent, decoded once
    (b"/a%2525b", "/a%25b"),  # double-encoded stays encoded once
    (b"/%C3%A9", "/é"),
    (b"/%c3%a9", "/é"),
    (b"/\xc3\xa9", "/é"),  # raw UTF-8 bytes
    (b"/a+b", "/a+b"),  # '+' is not a space in a path
    (b"/%20", "/ "),
    (b"", ""),
]


@pytest.mark.parametrize(("raw", "decoded"), PERCENT_DECODES)
def test_percent_decode(raw, decoded):
    assert percent_decode(raw) == decoded


PERCENT_REFUSES = [
    (b"/a%", "malformed percent-encoding"),  # bare '%'
    (b"%", "malformed percent-encoding"),
    (b"/a%2", "malformed percent-encoding"),
    (b"/%zz", "malformed percent-encoding"),
    (b"/%g0", "malformed percent-encoding"),
    (b"/%%41", "malformed percent-encoding"),  # the second '%' must not rescue the first
    (b"/%2%41", "malformed percent-encoding"),
    (b"/%ff", "not valid UTF-8"),
    (b"/%C3", "not valid UTF-8"),  # truncated sequence
    (b"/%C0%AF", "not valid UTF-8"),  # overlong '/'
    (b"/%ED%A0%80", "not valid UTF-8"),  # a UTF-16 surrogate
    (b"/\xff", "not valid UTF-8"),
]


@pytest.mark.parametrize(("raw", "fragment"), PERCENT_REFUSES)
def test_percent_decode_refuses(raw, fragment):
    with pytest.raises(InvalidPath) as caught:
        percent_decode(raw)
    assert fragment in str(caught.value)


# --- the whole target: what the ACL sees and what the app receives ----------------------------

TARGETS = [
    # (raw target, method the ACL sees, target the app receives)
    (b"/public", "public", b"/public"),
    (b"/", "", b"/"),
    (b"//", "", b"/"),
    (b"/..", "", b"/"),
    (b"/%2e", "", b"/"),
    (b"/admin%2F..%2Fpublic", "public", b"/public"),  # the CVE-2026-41491 payload
    (b"/admin%2F..%2F..%2Fpublic", "public", b"/public"),
    (b"/admin%2Fsecret%2F..%2F..%2Fpublic", "public", b"/public"),
    (b"/a%2Fb%2Fc%2F..%2F..%2F..%2Fpublic", "public", b"/public"),
    (b"/..%2Fpublic", "public", b"/public"),
    (b"/%2e%2e/%2e%2e/admin", "admin", b"/admin"),
    (b"/public%2F..%2Funauthorized", "unauthorized", b"/unauthorized"),
    (b"/public///extra", "public/extra", b"/public/extra"),
    (b"/admin%25stream", "admin%stream", b"/admin%25stream"),  # the app decodes '%' back
    (b"/admin%22stream", 'admin"stream', b"/admin%22stream"),
    (b"/admin%2Astream", "admin*stream", b"/admin*stream"),
    (b"/public%25%2F..%2Fadmin", "admin", b"/admin"),
    (b"/a;b", "a;b", b"/a%3Bb"),  # ';' re-escaped: no path parameters downstream
    (b"/%C3%A9t%C3%A9", "été", b"/%C3%A9t%C3%A9"),
    (b"/a b", "a b", b"/a%20b"),
    # the query is forwarded byte for byte, never decoded or checked
    (b"/x?a=%zz&b=..%2F", "x", b"/x?a=%zz&b=..%2F"),
    (b"/x?", "x", b"/x"),
    # Go's path.Clean drops the trailing slash, so ACL and app both get 'foo/bar'. Newer Dapr
    # (pathcorrectness.go, dapr/dapr#7686) re-attaches it for the app; we do not.
    (b"/foo/bar/", "foo/bar", b"/foo/bar"),
]


@pytest.mark.parametrize(("raw", "method", "wire"), TARGETS)
def test_normalize_target(raw, method, wire):
    target = normalize_target(raw)
    assert target.method == method
    assert target.wire_path == wire


TARGET_REFUSALS = [
    # Still encoded after the one decode, or a backslash: newest Dapr (aclencoded.go) refuses
    # these, since an app that decodes twice or reads '\\' as '/' would route another path.
    b"/admin%5Cstream",
    b"/admin%5C..%5Cpublic",
    b"/admin%2F..%5C..%2Fpublic",
    b"/admin%252Fsecret",
    b"/%252E%252E/admin",
    b"/admin%252fsecret",
    b"/test\\stream",
    b"/test%23stream",  # %23 → '#'
    b"/test%3Fstream",  # %3F → '?'
    b"/test%00stream",
    b"/test%0Dstream",
    b"/test%0Astream",
    b"/a%23b%3Fc%25d",
    b"/admin%3Fignored",
    b"/admin%00public",
    b"/admin%23%3F%25bypass",
    b"/public%23../../admin",
    b"/public%23%2F..%2Fadmin",
    b"/public%3F%2F..%2Fadmin",
    b"/public%23%00%2F..%2Fadmin",
    b"/admin%",  # purell's crash path before the fix
    b"/%zz",
    b"/%ff",
]


@pytest.mark.parametrize("raw", TARGET_REFUSALS)
def test_normalize_target_refuses(raw):
    with pytest.raises(InvalidPath) as caught:
        normalize_target(raw)
    assert caught.value.code == "ERR_MALFORMED_REQUEST"


def test_target_must_be_origin_form():
    assert normalize_target(b"/x").method == "x"
    for raw in (b"x", b"http://app/x", b"*", b""):
        with pytest.raises(InvalidPath, match="origin form"):
            normalize_target(raw)


def test_target_length_limit():
    longest = b"/" + b"a" * (MAX_TARGET_BYTES - 1)
    assert normalize_target(longest).method == "a" * (MAX_TARGET_BYTES - 1)
    with pytest.raises(TargetTooLong) as caught:
        normalize_target(longest + b"a")
    assert caught.value.http_status == 414


def test_split_target_keeps_query_raw():
    assert split_target(b"/a/b?x=1?y") == (b"/a/b", b"x=1?y")
    assert split_target(b"/a") == (b"/a", b"")


@pytest.mark.parametrize("target", [b"/a/b?x=1#z", b"/a#/../admin", b"/a/b#"])
def test_a_target_with_a_fragment_is_refused(target):
    with pytest.raises(InvalidPath, match="fragment"):
        split_target(target)


def test_wire_path_appends_query():
    assert RequestTarget("a/b", b"x=1").wire_path == b"/a/b?x=1"
    assert RequestTarget("", b"").wire_path == b"/"


# --- properties -------------------------------------------------------------------------------

# Text biased towards the characters that matter here.
PATHISH = st.lists(
    st.sampled_from(["/", ".", "..", "a", "b", "%", "\\", "é", " ", ";", "\x01", "#", "\x7f"])
    | st.text(max_size=3),
    max_size=14,
).map("".join)


def _accepted(method: str) -> str:
    try:
        return normalize_method(method)
    except InvalidPath:
        assume(False)
        raise


@FAST
@given(PATHISH)
def test_normalize_method_is_idempotent(method):
    once = _accepted(method)
    assert normalize_method(once) == once


@FAST
@given(PATHISH)
@example("a/./b")
@example("../../x")
def test_normalize_method_output_has_no_dot_segments_empty_segments_or_controls(method):
    out = _accepted(method)
    segments = out.split("/")
    assert "." not in segments
    assert ".." not in segments
    assert "//" not in out
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in out)
    assert not any(c in out for c in "#?\x00")


@FAST
@given(PATHISH)
@example("/a")
def test_normalize_method_output_has_no_leading_slash(method):
    assert not _accepted(method).startswith("/")


@FAST
@given(PATHISH)
@example("a%b")
@example("a;b")
@example("x y/é")
def test_the_app_decodes_exactly_what_was_checked(method):
    checked = _accepted(method)
    wire = RequestTarget(checked, b"").wire_path
    assert percent_decode(wire) == "/" + checked
    # ... and the app's target, fed back through the sidecar, is a fixed point.
    assert normalize_target(wire).method == checked.lstrip("/")


@FAST
@given(st.binary(max_size=60).map(lambda b: b"/" + b))
@example(b"/%")
@example(b"/%2")
@example(b"/%C3")
@example(b"/a" * (MAX_TARGET_BYTES // 2 + 1))
def test_normalize_target_only_ever_raises_invalid_path(raw):
    try:
        target = normalize_target(raw)
    except InvalidPath:
        return
    # An accepted target can always be put back on the wire, and round-trips.
    assert percent_decode(target.wire_path.partition(b"?")[0]) == "/" + target.method


@FAST
@given(
    st.lists(st.sampled_from(["a", "b", ".", "..", "", "%2F", "%2e%2e", "%2E", "c%25"]), max_size=8)
)
def test_encoded_traversal_resolves_like_decoded_traversal(segments):
    encoded = "/" + "/".join(segments)
    decoded = encoded.replace("%2F", "/").replace("%2e", ".").replace("%2E", ".")
    decoded = decoded.replace("%25", "%")
    assert normalize_target(encoded.encode()).method == normalize_method(decoded.lstrip("/"))
