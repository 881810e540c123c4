"""Suite-wide fixtures. Tier-specific fixtures live beside their tests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests._support.pki import make_ca

# Property tests check what holds, not how fast: on a loaded 2-core machine a single example can
# take longer than hypothesis's 200 ms default, which made them fail at random (never a real
# finding). Speed is measured in bench/.
settings.register_profile("trustmesh", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("trustmesh")


@pytest.fixture(scope="session")
def mesh_ca():
    """One CA for the whole run: creating keys is the slow part of most identity tests."""
    return make_ca("public")
