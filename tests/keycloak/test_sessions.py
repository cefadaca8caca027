"""Sessions against a real Keycloak: refresh-token rotation on short tokens, offline sessions past the SSO maximum,
an admin's revocation, signing-key rotation, and the roles that decide deletes (realm roles and client roles)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
from joserfc import jws

from mlflow_oidc_jupyter.errors import LoginRequired, OIDCError
from mlflow_oidc_jupyter.oidc import Session

from . import http_pages
from .conftest import KeycloakStack

pytestmark = pytest.mark.slow


def signed_in(keycloak: KeycloakStack, cache: Path, user: str, password: str | None = None, **settings) -> Session:
    """A session signed in through the device flow, approved on Keycloak's pages as `user`."""
    session = Session(keycloak.settings(cache, **settings), background_refresh=False)
    approvals: list[threading.Thread] = []

    def approve(device) -> None:
        thread = threading.Thread(
            target=http_pages.approve_device,
            args=(device.verification_uri_complete, user, password or keycloak.password(user)),
        )
        thread.start()
        approvals.append(thread)

    session.login_device(approve)
    for thread in approvals:
        thread.join()
    return session


def mlflow_api(keycloak: KeycloakStack, session: Session, path: str, body: dict | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {session.access_token()}"}
    url = f"{keycloak.mlflow_url}/api/2.0/mlflow/{path}"
    if body is None:
        return requests.get(url, headers=headers, timeout=30)
    return requests.post(url, json=body, headers=headers, timeout=30)


def token_endpoint(keycloak: KeycloakStack) -> str:
    return f"{keycloak.issuer}/protocol/openid-connect/token"


def test_short_tokens_refresh_with_rotation_and_a_reused_refresh_token_is_refused(keycloak, realm_settings, tmp_path):
    realm_settings(accessTokenLifespan=10)
    session = signed_in(keycloak, tmp_path, "bob")
    first = session._tokens
    assert first is not None and first.lifetime <= 10

    while first.expires_in() > 0:  # the first access token runs out; using the session refreshes it
        time.sleep(0.2)
    search = mlflow_api(keycloak, session, "experiments/search?max_results=1")

    assert search.status_code == 200
    rotated = session._tokens
    assert rotated.refresh_token != first.refresh_token and rotated.access_token != first.access_token
    reuse = {"grant_type": "refresh_token", "refresh_token": first.refresh_token, "client_id": "jupyter"}
    reused = requests.post(token_endpoint(keycloak), data=reuse, timeout=30)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


def test_an_offline_session_outlives_the_sso_session_maximum(keycloak, realm_settings, tmp_path):
    realm_settings(ssoSessionMaxLifespan=15, ssoSessionIdleTimeout=15)
    online = signed_in(keycloak, tmp_path / "online", "alice")
    offline = signed_in(keycloak, tmp_path / "offline", "alice", scopes=("openid", "profile", "offline_access"))
    assert keycloak.admin.offline_sessions("alice", "jupyter")

    deadline = time.monotonic() + 90
    while True:  # until Keycloak ends the online session at its maximum
        try:
            online.refresh()
        except OIDCError:
            break
        assert time.monotonic() < deadline, "the SSO session outlived its maximum"
        time.sleep(1)

    offline.refresh()
    assert mlflow_api(keycloak, offline, "experiments/search?max_results=1").status_code == 200


def test_an_admin_ending_a_users_sessions_signs_the_user_out(keycloak, tmp_path):
    session = signed_in(keycloak, tmp_path, "bob")

    keycloak.admin.logout_user("bob")

    with pytest.raises(OIDCError):
        session.refresh()
    with pytest.raises(LoginRequired):
        session.access_token()


def test_a_rotated_signing_key_is_used_by_keycloak_and_accepted_by_the_gate(keycloak, tmp_path):
    admin = keycloak.admin
    before = signed_in(keycloak, tmp_path, "alice")
    old_kid = jws.extract_compact(before.access_token().encode()).headers()["kid"]
    old = [p for p in admin.key_providers() if p["providerId"] == "rsa-generated"]
    admin.add_rsa_key_provider("rotated", priority=500)
    try:
        for provider in old:
            admin.set_key_provider_enabled(provider, False)

        after = before.refresh()
        new_kid = jws.extract_compact(after.access_token.encode()).headers()["kid"]

        assert new_kid != old_kid
        jwks = requests.get(f"{keycloak.issuer}/protocol/openid-connect/certs", timeout=30).json()
        assert old_kid not in {k["kid"] for k in jwks["keys"]}
        # The gate has not seen this key: it refetches Keycloak's JWKS on the unknown kid and lets the token in.
        assert mlflow_api(keycloak, before, "experiments/search?max_results=1").status_code == 200
    finally:
        for provider in old:
            admin.set_key_provider_enabled(admin.get(f"/components/{provider['id']}"), True)
        for provider in admin.key_providers():
            if provider["name"] == "rotated":
                admin.request("DELETE", f"/components/{provider['id']}")


def test_bob_may_not_delete_alice_may(keycloak, tmp_path):
    alice = signed_in(keycloak, tmp_path / "alice", "alice")
    bob = signed_in(keycloak, tmp_path / "bob", "bob")
    created = mlflow_api(keycloak, bob, "experiments/create", {"name": f"kc-{time.time_ns()}"})
    assert created.status_code == 200, created.text

    denied = mlflow_api(keycloak, bob, "experiments/delete", created.json())
    allowed = mlflow_api(keycloak, alice, "experiments/delete", created.json())

    assert denied.status_code == 403
    assert allowed.status_code == 200
    assert "Default" in bob.identity.roles and "Admin" in alice.identity.roles


def test_a_client_role_alone_is_shown_and_lets_its_holder_delete(keycloak, tmp_path):
    user = f"carol{time.time_ns() % 10**8}"
    keycloak.admin.create_user(user, "carol-client-role-only")
    keycloak.admin.grant_client_role(user, "jupyter", "Admin")  # a client role of `jupyter`, no realm role Admin
    carol = signed_in(keycloak, tmp_path, user, "carol-client-role-only")
    created = mlflow_api(keycloak, carol, "experiments/create", {"name": f"kc-{time.time_ns()}"})

    deleted = mlflow_api(keycloak, carol, "experiments/delete", created.json())

    assert "Admin" in carol.identity.roles  # from resource_access.jupyter.roles, as the gate reads it
    assert deleted.status_code == 200
