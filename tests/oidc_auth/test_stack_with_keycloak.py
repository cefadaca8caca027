"""`stack/run up --server mlflow-oidc-auth --idp keycloak`, put together without starting it (the tier's Keycloak
variant runs mlflow-oidc-auth live against the session's one Keycloak, with the same settings, see conftest.py)."""

from __future__ import annotations

from stack import oidc_auth
from stack.localstack import ExternalProvider, LocalStack

ISSUER = "http://127.0.0.1:28000/realms/mlflow"


def stack_of(tmp_path, idp: str) -> LocalStack:
    local = LocalStack(tmp_path / "run", server="mlflow-oidc-auth", log=lambda _m: None)
    local.layout.run_dir.mkdir()
    local._write_state({"components": {}, "server": "mlflow-oidc-auth", "idp": idp, "env": {}})
    return local


def test_with_keycloak_it_starts_after_keycloak_and_its_database_with_keycloaks_settings(tmp_path):
    local = stack_of(tmp_path, "keycloak")
    endpoints = {"issuer": ISSUER, "audience": "mlflow", "clients": {"jupyter": {"client_id": "jupyter"}},
                 "ports": {"postgres": 1, "idp": 2, "mlflow-oidc-auth": 3}}  # fmt: skip

    argv, env = local._command("mlflow-oidc-auth", endpoints)

    assert [name for name, _status, _entry in local.status()] == ["postgres", "idp", "mlflow-oidc-auth"]
    assert argv[1:4] == ["server", "--app-name", "oidc-auth"]
    assert env.items() >= oidc_auth.provider_settings("keycloak", ISSUER, "mlflow", "jupyter").items()


def test_in_front_of_an_existing_realm_it_is_the_only_component_and_uses_keycloaks_settings(tmp_path):
    local = stack_of(tmp_path, "external")
    realm = ExternalProvider(issuer=ISSUER, audience="api", client_id="notebooks")
    endpoints = {"issuer": realm.issuer, "audience": realm.audience, "ports": {"mlflow-oidc-auth": 3},
                 "clients": {"jupyter": {"client_id": realm.client_id}}}  # fmt: skip

    _argv, env = local._command("mlflow-oidc-auth", endpoints)

    assert [name for name, _status, _entry in local.status()] == ["mlflow-oidc-auth"]
    assert env.items() >= oidc_auth.provider_settings("keycloak", ISSUER, "api", "notebooks").items()
