"""Properties: every valid SPIFFE ID and App identity survives print-then-parse unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity import AppIdentity, InvalidSpiffeId, SpiffeId

TD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789._-"
SEG_ALPHABET = TD_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
APP_ALPHABET = SEG_ALPHABET.replace(".", "")

trust_domains = st.text(TD_ALPHABET, min_size=1, max_size=40)
segments = st.text(SEG_ALPHABET, min_size=1, max_size=20).filter(lambda s: s not in (".", ".."))
app_parts = st.text(APP_ALPHABET, min_size=1, max_size=64)
spiffe_ids = st.builds(
    lambda td, segs: SpiffeId.from_parts(td, *segs),
    trust_domains,
    st.lists(segments, max_size=6),
)


@given(spiffe_ids)
def test_spiffe_id_round_trips(sid: SpiffeId) -> None:
    assert SpiffeId.parse(str(sid)) == sid


@given(st.builds(AppIdentity, trust_domains, app_parts, app_parts))
def test_app_identity_round_trips(app: AppIdentity) -> None:
    assert AppIdentity.from_spiffe_id(str(app)) == app
    assert AppIdentity.from_spiffe_id(app.spiffe_id) == app


@given(spiffe_ids, st.sampled_from(["\n", "\r", " ", "%2F", "?", "#", "/", "\x00"]))
def test_a_valid_id_with_a_suffix_is_never_accepted_as_something_else(
    sid: SpiffeId, suffix: str
) -> None:
    """``$`` once let a trailing newline through; no suffix may yield a different valid ID."""
    try:
        parsed = SpiffeId.parse(str(sid) + suffix)
    except InvalidSpiffeId:
        return
    pytest.fail(f"accepted {parsed!r}")
