"""SPIFFE ID validation, as tables: the SPIFFE spec's rules and go-spiffe's test cases.

Each refusal asserts the exact message, so a rule that starts failing for another reason shows.
"""

from __future__ import annotations

import pytest

from identity import AppIdentity, InvalidSpiffeId, NotAnAppIdentity, SpiffeId

TD_CHARS = (
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, "
    "and underscores: {!r}"
)
SEG_CHARS = (
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores: {!r}"
)

VALID = [
    ("spiffe://trustdomain", "trustdomain", ""),
    ("spiffe://trustdomain/path", "trustdomain", "/path"),
    ("spiffe://trustdomain/path/element", "trustdomain", "/path/element"),
    ("spiffe://a.b-c_d/e.f-g_h/A0-z9", "a.b-c_d", "/e.f-g_h/A0-z9"),
    ("spiffe://td/...", "td", "/..."),
    ("spiffe://td/.hidden", "td", "/.hidden"),
    ("spiffe://public/ns/default/MyApp", "public", "/ns/default/MyApp"),
    ("spiffe://1.2.3.4/x", "1.2.3.4", "/x"),
]

INVALID = [
    ("", "SPIFFE ID cannot be empty"),
    ("http://td/p", "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"),
    ("SPIFFE://td/p", "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"),
    ("spiffe:/td/p", "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"),
    (" spiffe://td/p", "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"),
    ("td/p", "scheme is missing or invalid: a SPIFFE ID starts with 'spiffe://'"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("spiffe://TrustDomain/p", TD_CHARS.format("TrustDomain")),
    ("spiffe://td:8080/p", "trust domain cannot contain a port: 'td:8080'"),
    ("spiffe://user:pw@td/p", "trust domain cannot contain userinfo: 'user:pw@td'"),
    ("spiffe://td/p?query=1", "SPIFFE ID cannot contain a query"),
    ("spiffe://td?x", "SPIFFE ID cannot contain a query"),
    ("spiffe://td/p#fragment", "SPIFFE ID cannot contain a fragment"),
    ("spiffe://td//p", "path cannot contain empty segments"),
    ("spiffe://td/a//b", "path cannot contain empty segments"),
    ("spiffe://td/./p", "path cannot contain dot segments"),
    ("spiffe://td/p/..", "path cannot contain dot segments"),
    ("spiffe://td/p/../q", "path cannot contain dot segments"),
    ("spiffe://td/", "path cannot have a trailing slash"),
    ("spiffe://td/p/", "path cannot have a trailing slash"),
    ("spiffe://td/p%20q", SEG_CHARS.format("p%20q")),
    ("spiffe://t%64/p", TD_CHARS.format("t%64")),
    ("spiffe://td/p q", SEG_CHARS.format("p q")),
    ("spiffe://td/caf\u00e9", SEG_CHARS.format("caf\u00e9")),
    ("spiffe://td/p\n", SEG_CHARS.format("p\n")),
    ("spiffe://td\n", TD_CHARS.format("td\n")),
    ("spiffe://td/" + "a" * 2037, "SPIFFE ID is longer than 2048 bytes"),
    ("spiffe://" + "a" * 256, "trust domain is longer than 255 bytes"),
]


@pytest.mark.parametrize(("text", "trust_domain", "path"), VALID)
def test_valid_ids_parse(text: str, trust_domain: str, path: str) -> None:
    sid = SpiffeId.parse(text)
    assert (sid.trust_domain, sid.path, str(sid)) == (trust_domain, path, text)


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_ids_are_refused_with_the_rule_they_break(text: str, message: str) -> None:
    with pytest.raises(InvalidSpiffeId) as caught:
        SpiffeId.parse(text)
    assert str(caught.value) == message


def test_exactly_2048_bytes_is_allowed() -> None:
    text = "spiffe://td/" + "a" * (2048 - len("spiffe://td/"))
    assert len(SpiffeId.parse(text).__str__()) == 2048


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidSpiffeId, match="must be a string, not bytes"):
        SpiffeId.parse(b"spiffe://td/p")  # type: ignore[arg-type]


def test_from_parts_validates_each_segment() -> None:
    assert str(SpiffeId.from_parts("td", "a", "b")) == "spiffe://td/a/b"
    with pytest.raises(InvalidSpiffeId, match="dot segments"):
        SpiffeId.from_parts("td", "a", "..")
    with pytest.raises(InvalidSpiffeId, match="empty segments"):
        SpiffeId.from_parts("td", "")


APP_INVALID = [
    ("spiffe://public/ns/default", "is not an App ID"),
    ("spiffe://public/ns/default/app/extra", "is not an App ID"),
    ("spiffe://public/namespace/default/app", "is not an App ID"),
    ("spiffe://public", "is not an App ID"),
    ("spiffe://public/ns/default/my.app", "dots are reserved for '<app-id>.<namespace>'"),
    ("spiffe://public/ns/de.fault/app", "invalid namespace 'de.fault': dots are not allowed"),
    ("spiffe://public/ns/default/" + "a" * 65, "longer than 64 chars"),
]


@pytest.mark.parametrize(("text", "fragment"), APP_INVALID)
def test_only_the_dapr_form_is_an_app_identity(text: str, fragment: str) -> None:
    with pytest.raises(NotAnAppIdentity) as caught:
        AppIdentity.from_spiffe_id(text)
    assert fragment in str(caught.value)


def test_app_identity_parts_and_case_sensitivity() -> None:
    app = AppIdentity.from_spiffe_id("spiffe://public/ns/default/MyApp")
    assert (app.trust_domain, app.namespace, app.app_id) == ("public", "default", "MyApp")
    assert app != AppIdentity("public", "default", "myapp")
    assert str(app.spiffe_id) == str(app) == "spiffe://public/ns/default/MyApp"


def test_app_identity_refuses_a_bad_trust_domain_as_not_an_app() -> None:
    with pytest.raises(NotAnAppIdentity, match="trust domain cannot contain a port"):
        AppIdentity("td:1", "default", "app")
