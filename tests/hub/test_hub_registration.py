"""What the local stack registers at the provider beside a hub: the hub's exact callback (its port included), and a
`jupyter` client with no browser redirect; the realm file itself stays the production one."""

from __future__ import annotations

import json

import pytest

from stack import hubstack, keycloak_idp

PORTS = {"proxy": 18123, "proxy-api": 18124, "hub": 18125}


def _clients(realm: dict) -> dict[str, dict]:
    return {client["clientId"]: client for client in realm["clients"]}


def test_the_realm_for_a_hub_registers_the_hubs_exact_local_callback_and_sign_out_address():
    hub = hubstack.idp_client(PORTS, "secret")

    realm = keycloak_idp.realm_for_import({}, hub)

    client = _clients(realm)["jupyterhub"]
    assert client["redirectUris"] == ["http://127.0.0.1:18123/hub/oauth_callback"]
    assert client["attributes"]["post.logout.redirect.uris"] == "http://127.0.0.1:18123/hub/login"
    assert "*" not in json.dumps(realm["clients"])


def test_the_realm_for_a_hub_leaves_the_jupyter_client_the_device_flow_only():
    realm = keycloak_idp.realm_for_import({}, hubstack.idp_client(PORTS, "secret"))

    jupyter = _clients(realm)["jupyter"]
    assert jupyter["standardFlowEnabled"] is False and jupyter["redirectUris"] == []
    assert jupyter["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert "post.logout.redirect.uris" not in jupyter["attributes"]


def test_without_a_hub_the_realm_is_the_production_file_with_its_single_user_redirects():
    realm = keycloak_idp.realm_for_import({})
    production = json.loads(keycloak_idp.REALM_FILE.read_text())

    assert _clients(realm) == _clients(production)
    assert _clients(production)["jupyterhub"]["redirectUris"] == ["https://${JUPYTER_SERVER_NAME}/hub/oauth_callback"]
    assert "http://127.0.0.1/oauth/callback" in _clients(production)["jupyter"]["redirectUris"]


def test_a_wildcard_hub_redirect_is_refused():
    realm = json.loads(keycloak_idp.REALM_FILE.read_text())
    with pytest.raises(ValueError, match="wildcard"):
        keycloak_idp.for_hub(realm, ["https://hub.example.org/user/*"], [])
