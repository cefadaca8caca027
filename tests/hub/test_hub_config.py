"""`configure_hub` writes the documented hub configuration; a server finds the hub from JupyterHub's environment."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from mlflow_oidc_jupyter.errors import ConfigError
from mlflow_oidc_jupyter.hub import SCOPE, configure_hub
from mlflow_oidc_jupyter.hub.session import HubEndpoint

HUB = {
    "issuer": "https://auth.example.org/realms/mlflow",
    "client_id": "jupyterhub",
    "client_secret": "s3cret",
    "hub_url": "https://hub.example.org/",
    "tracking_uri": "https://mlflow.example.org",
    "audience": "mlflow",
}


def test_configure_hub_makes_the_hub_the_one_confidential_client_with_an_exact_callback():
    c = Config()
    configure_hub(c, **HUB)

    auth = c.MLflowOIDCAuthenticator
    assert c.JupyterHub.authenticator_class.__name__ == "MLflowOIDCAuthenticator"
    assert auth.oauth_callback_url == "https://hub.example.org/hub/oauth_callback"
    assert auth.enable_auth_state is True and auth.client_secret == "s3cret"
    assert SCOPE in c.JupyterHub.custom_scopes
    assert c.JupyterHub.extra_user_scopes == [f"{SCOPE}!user"]
    server = next(role for role in c.JupyterHub.load_roles if role["name"] == "server")
    assert server["scopes"] == ["users:activity!user", "access:servers!server", f"{SCOPE}!user"]
    env = c.Spawner.environment
    assert env["MLFLOW_OIDC_HUB_SESSION"] == "1" and env["MLFLOW_TRACKING_URI"] == HUB["tracking_uri"]
    assert "s3cret" not in str(env)  # the secret stays in the hub


def test_configure_hub_adds_to_what_the_config_file_set_before():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "server", "scopes": ["read:users:name!user"]}, {"name": "ops", "scopes": []}]
    c.KubeSpawner.environment = {"TEAM": "ml"}
    configure_hub(c, **HUB)

    roles = {role["name"]: role["scopes"] for role in c.JupyterHub.load_roles}
    assert roles == {"server": ["read:users:name!user", f"{SCOPE}!user"], "ops": []}
    assert c.KubeSpawner.environment["TEAM"] == "ml" and c.KubeSpawner.environment["MLFLOW_OIDC_HUB_SESSION"] == "1"


def test_a_server_finds_its_users_token_endpoint_in_jupyterhubs_environment():
    env = {
        "MLFLOW_OIDC_HUB_SESSION": "1",
        "JUPYTERHUB_API_URL": "http://hub:8081/hub/api",
        "JUPYTERHUB_API_TOKEN": "t0ken",
        "JUPYTERHUB_USER": "alice",
    }
    endpoint = HubEndpoint.from_env(env)
    assert endpoint is not None
    assert endpoint.url == "http://hub:8081/hub/api/mlflow-oidc/users/alice/token"
    assert "t0ken" not in repr(endpoint)
    assert HubEndpoint.from_env({k: v for k, v in env.items() if k != "MLFLOW_OIDC_HUB_SESSION"}) is None
    with pytest.raises(ConfigError, match="JUPYTERHUB_API_TOKEN"):
        HubEndpoint.from_env({k: v for k, v in env.items() if k != "JUPYTERHUB_API_TOKEN"})
