"""The Keycloak tier: every test here shares the session's one Keycloak stack (tests/support/keycloak.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Jupyter servers with the extension, pointed at this tier's Keycloak with `start_jupyter(on=keycloak)`.
from ..server.conftest import start_jupyter  # noqa: F401
from ..support.keycloak import FIRST_START_TIMEOUT, ROLES_CLAIM, KeycloakStack  # noqa: F401 (imported from here)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first test of the tier also waits for Keycloak's first start (a JVM, a fresh schema): minutes under load.
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(FIRST_START_TIMEOUT))
