"""The session's one Keycloak stack (Keycloak, PostgreSQL, MLflow, gate, nginx), for every tier that needs Keycloak.

Its fixtures are registered in tests/conftest.py so that tests/keycloak, tests/oidc_auth (mlflow-oidc-auth against
Keycloak) and any other folder share ONE Keycloak start per test session: a JVM and a fresh schema, minutes under
load. Tests that change realm settings restore them through `realm_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.keycloak_admin import KeycloakAdmin
from stack.localstack import LocalStack

from ..conftest import Stack
from .oidc_sessions import settings_for

# Keycloak's own claim paths (not our `roles` mapper): realm roles and the client roles of client `jupyter`.
ROLES_CLAIM = ("realm_access.roles", "resource_access.jupyter.roles")
#: The first test that uses Keycloak also waits for its first start (a JVM, a fresh schema): minutes under load.
FIRST_START_TIMEOUT = 1800


class KeycloakStack(Stack):
    """The running Keycloak stack: endpoints, the admin API, settings for its clients."""

    @property
    def admin(self) -> KeycloakAdmin:
        kc = self.endpoints["keycloak"]
        return KeycloakAdmin(kc["url"], kc["admin_password"], realm=kc["realm"], user=kc["admin_user"])

    @property
    def keycloak_url(self) -> str:
        return self.endpoints["keycloak"]["url"]

    def settings(self, cache_dir: Path, client: str = "jupyter", **overrides: Any):
        return settings_for(self, cache_dir, client=client, roles_claim=ROLES_CLAIM, **overrides)


@pytest.fixture(scope="session")
def keycloak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeycloakStack]:
    """The session's Keycloak stack (Keycloak, PostgreSQL, MLflow on PostgreSQL, gate, nginx), stopped at the end.

    KEYCLOAK_TEST_RUN_DIR names a stack already started with `stack/run up --idp keycloak --roles-claim ...`
    (the ROLES_CLAIM above) to reuse while working on these tests; it is left running.
    """
    reuse = os.environ.get("KEYCLOAK_TEST_RUN_DIR")
    if reuse:
        local = LocalStack(Path(reuse), log=lambda _m: None)
        yield KeycloakStack(local, local.endpoints())
        return
    local = LocalStack(tmp_path_factory.mktemp("keycloak"), env={"STACK_GATE_LEEWAY": "0"}, log=lambda _m: None)
    try:
        endpoints = local.up(free_ports=True, idp="keycloak", roles_claim=ROLES_CLAIM)
        yield KeycloakStack(local, endpoints)
    finally:
        local.down()


@pytest.fixture
def realm_settings(keycloak: KeycloakStack) -> Iterator[Callable[..., None]]:
    """Change realm settings for one test; the previous values come back afterwards."""
    admin = keycloak.admin
    changed: dict[str, Any] = {}

    def change(**settings: Any) -> None:
        current = admin.realm_settings()
        for name in settings:
            changed.setdefault(name, current.get(name))
        admin.update_realm(**settings)

    try:
        yield change
    finally:
        if changed:
            admin.update_realm(**changed)
