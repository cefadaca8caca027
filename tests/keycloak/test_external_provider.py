"""`stack/run up --issuer ...`: the gate, nginx and MLflow in front of an existing provider (here: the tier's
Keycloak, standing in for an organisation's), with its roles claim handed to gate and clients alike."""

from __future__ import annotations

import time

import pytest
import requests

from stack.localstack import ExternalProvider, LocalStack

from .conftest import ROLES_CLAIM, KeycloakStack
from .test_sessions import signed_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fronted(keycloak: KeycloakStack, tmp_path_factory: pytest.TempPathFactory):
    local = LocalStack(tmp_path_factory.mktemp("external"), log=lambda _m: None)
    try:
        yield local.up(free_ports=True, external=ExternalProvider(issuer=keycloak.issuer), roles_claim=ROLES_CLAIM)
    finally:
        local.down()


def test_the_stack_in_front_of_an_existing_provider_starts_no_idp_and_applies_its_roles(keycloak, fronted, tmp_path):
    bob = signed_in(keycloak, tmp_path / "bob", "bob")
    alice = signed_in(keycloak, tmp_path / "alice", "alice")

    def call(session, path: str, body: dict) -> requests.Response:
        return requests.post(f"{fronted['mlflow_url']}/api/2.0/mlflow/{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {session.access_token()}"})  # fmt: skip

    created = call(bob, "experiments/create", {"name": f"front-{time.time_ns()}"})
    assert created.status_code == 200, created.text
    assert call(bob, "experiments/delete", created.json()).status_code == 403
    assert call(alice, "experiments/delete", created.json()).status_code == 200
    assert fronted["idp"] == "external" and fronted["issuer"] == keycloak.issuer
    assert fronted["roles_claim"] == list(ROLES_CLAIM)
    assert "idp" not in fronted["ports"]
