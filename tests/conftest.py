"""Suite-wide fixtures. Tier-specific fixtures live beside their tests."""

from __future__ import annotations

import pytest

from tests._support.pki import make_ca


@pytest.fixture(scope="session")
def mesh_ca():
    """One CA for the whole run: creating keys is the slow part of most identity tests."""
    return make_ca("public")
