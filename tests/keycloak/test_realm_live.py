"""What the docs promise of realm mlflow, read back from the running Keycloak through its admin API.

The realm file is the single source for compose and the native stack; these checks ask Keycloak what it made of
it (defaults filled in, placeholders resolved, mappers applied), not what the JSON text says.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests

from .conftest import KeycloakStack


@pytest.fixture(scope="module")
def realm(keycloak: KeycloakStack) -> dict:
    return keycloak.admin.realm_settings()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_realm_mlflow_has_roles_admin_and_default_and_everyone_may_ask_for_offline_sessions(keycloak, realm):
    roles = {r["name"] for r in keycloak.admin.get("/roles")}
    default = keycloak.admin.get("/roles/default-roles-mlflow/composites/realm")

    assert realm["enabled"] is True and {"Admin", "Default", "offline_access"} <= roles
    assert "offline_access" in {r["name"] for r in default}
    assert not {"Admin", "Default"} & {r["name"] for r in default}  # MLflow access is granted, never default


def test_keycloak_kept_its_built_in_client_scopes(keycloak):
    scopes = {s["name"] for s in keycloak.admin.get("/client-scopes")}
    assert {"profile", "email", "roles", "basic", "offline_access", "web-origins"} <= scopes


def test_token_lifetimes_and_refresh_token_rotation(realm):
    assert realm["accessTokenLifespan"] == 300
    assert realm["ssoSessionMaxLifespan"] == 10 * 3600  # longer runs need an offline session
    assert 0 < realm["ssoSessionIdleTimeout"] <= realm["ssoSessionMaxLifespan"]
    assert realm["offlineSessionIdleTimeout"] >= 7 * 24 * 3600
    assert realm["offlineSessionMaxLifespanEnabled"] is True
    assert realm["offlineSessionMaxLifespan"] > realm["offlineSessionIdleTimeout"]
    assert realm["revokeRefreshToken"] is True and realm["refreshTokenMaxReuse"] == 0
    assert realm["oauth2DeviceCodeLifespan"] <= 900


def test_keycloak_records_sign_ins_and_admin_changes(keycloak, realm):
    events = keycloak.admin.get("/events/config")
    assert events["eventsEnabled"] is True and events["eventsExpiration"] >= 7 * 24 * 3600
    assert events["adminEventsEnabled"] is True
    assert realm["bruteForceProtected"] is True


def test_jupyter_is_a_public_pkce_client_with_browser_and_device_flows(keycloak):
    jupyter = keycloak.admin.client("jupyter")
    assert jupyter["publicClient"] is True and jupyter["standardFlowEnabled"] is True
    assert jupyter["directAccessGrantsEnabled"] is False and jupyter["implicitFlowEnabled"] is False
    assert jupyter["attributes"]["pkce.code.challenge.method"] == "S256"
    assert jupyter["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert "offline_access" in jupyter["optionalClientScopes"]


def test_the_jupyter_sign_out_return_addresses_are_registered(keycloak):
    registered = keycloak.admin.client("jupyter")["attributes"]["post.logout.redirect.uris"].split("##")
    # JUPYTER_SERVER_NAME is 127.0.0.1 in the native stack; compose puts the real name there. The first is
    # MLflowOIDC.post_logout_redirect_uri's default behind TLS, the second the same page on a loopback port.
    assert registered == ["https://127.0.0.1/mlflow/oauth/logout", "http://127.0.0.1/mlflow/oauth/logout"]


def test_access_tokens_carry_audience_mlflow_roles_and_username(keycloak):
    secret = keycloak.endpoints["clients"]["ci-bot"]["client_secret"]
    answer = requests.post(f"{keycloak.issuer}/protocol/openid-connect/token",
                           data={"grant_type": "client_credentials"}, auth=("ci-bot", secret), timeout=30)  # fmt: skip
    claims = claims_of(answer.json()["access_token"])

    assert answer.status_code == 200 and "refresh_token" not in answer.json()
    assert "mlflow" in claims["aud"] and claims["iss"] == keycloak.issuer
    assert "Default" in claims["roles"] and "Admin" not in claims["roles"]
    assert "Default" in claims["realm_access"]["roles"]
    assert claims["preferred_username"] == "service-account-ci-bot"


def test_ci_bot_is_confidential_with_only_its_service_account(keycloak):
    bot = keycloak.admin.client("ci-bot")
    assert bot["publicClient"] is False and bot["serviceAccountsEnabled"] is True
    assert not bot["standardFlowEnabled"] and not bot["directAccessGrantsEnabled"]
    token = f"{keycloak.issuer}/protocol/openid-connect/token"
    wrong = requests.post(token, data={"grant_type": "client_credentials"}, auth=("ci-bot", "wrong"), timeout=30)
    assert wrong.status_code == 401


def test_redirect_uris_are_exact_paths_on_any_loopback_port_and_refuse_other_sites(keycloak):
    auth = f"{keycloak.issuer}/protocol/openid-connect/auth"

    def status(redirect_uri: str) -> int:
        params = {"client_id": "jupyter", "response_type": "code", "scope": "openid", "redirect_uri": redirect_uri,
                  "code_challenge": "x" * 43, "code_challenge_method": "S256"}  # fmt: skip
        return requests.get(auth, params=params, allow_redirects=False, timeout=30).status_code

    assert not any("*" in uri for uri in keycloak.admin.client("jupyter")["redirectUris"])
    assert status("http://127.0.0.1:53127/oauth/callback") == 200  # mlflow-oidc login --browser
    assert status("http://127.0.0.1:8888/mlflow/oauth/callback") == 200  # a Jupyter server on loopback
    assert status("http://127.0.0.1:8888/lab") == 400
    assert status("https://evil.example/mlflow/oauth/callback") == 400
    assert status("http://localhost:8765/oauth/callback") == 400
