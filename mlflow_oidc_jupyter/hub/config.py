"""`configure_hub(c, ...)`: the few lines of jupyterhub_config.py that make the hub the one OIDC client for MLflow."""

from __future__ import annotations

from typing import Any

from .contract import HUB_SESSION_ENV, SCOPE

#: The scopes of JupyterHub's default `server` role (jupyterhub.roles.get_default_roles); ours comes on top.
_SERVER_ROLE_SCOPES = ("users:activity!user", "access:servers!server")


def configure_hub(
    c: Any,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    hub_url: str,
    tracking_uri: str,
    audience: str | None = None,
    scopes: list[str] | None = None,
) -> None:
    """Sign people in at the hub with OIDC and give each user's server (and its kernels) that user's session.

    `hub_url` is the public URL people open (e.g. ``https://hub.example.org``); the redirect URI to register at
    the provider is exactly ``{hub_url}/hub/oauth_callback`` (with the hub's base_url, if any, before ``hub/``).
    """
    from .authenticator import MLflowOIDCAuthenticator

    base = hub_url.rstrip("/")
    c.JupyterHub.authenticator_class = MLflowOIDCAuthenticator
    auth = c.MLflowOIDCAuthenticator
    auth.issuer = issuer
    auth.client_id = client_id
    auth.client_secret = client_secret
    auth.oauth_callback_url = f"{base}/hub/oauth_callback"
    auth.enable_auth_state = True  # needs JUPYTERHUB_CRYPT_KEY: the tokens are kept encrypted in the hub's database
    if audience:
        auth.audience = audience
    if scopes:
        auth.scope = list(scopes)

    # A user's own server token may fetch that user's MLflow access tokens, nothing more.
    c.JupyterHub.custom_scopes = {
        **_existing(c.JupyterHub, "custom_scopes", {}),
        SCOPE: {"description": "Get fresh MLflow access tokens of your own sign-in (never the refresh token)."},
    }
    own = f"{SCOPE}!user"
    c.JupyterHub.extra_user_scopes = [*_existing(c.JupyterHub, "extra_user_scopes", []), own]
    roles = {role["name"]: role for role in _existing(c.JupyterHub, "load_roles", [])}
    server = roles.setdefault("server", {"name": "server", "scopes": list(_SERVER_ROLE_SCOPES)})
    if own not in server["scopes"]:
        server["scopes"] = [*server["scopes"], own]
    c.JupyterHub.load_roles = list(roles.values())

    # What each single-user server needs: take the session from the hub, and where MLflow and the provider are.
    environment = {
        HUB_SESSION_ENV: "1",
        "MLFLOW_OIDC_ISSUER": issuer,
        "MLFLOW_OIDC_CLIENT_ID": client_id,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_AUTH": "oidc",
        **({"MLFLOW_OIDC_AUDIENCE": audience} if audience else {}),
    }
    # A spawner's own section (e.g. Zero to JupyterHub's c.KubeSpawner.environment) wins over c.Spawner: add there too.
    sections = ["Spawner", *(name for name in c if name.endswith("Spawner") and "environment" in c[name])]
    for name in dict.fromkeys(sections):
        c[name].environment = {**_existing(c[name], "environment", {}), **environment}


def _existing(section: Any, name: str, empty: Any) -> Any:
    """A value the config file set before calling us (traitlets' lazy config sections answer anything)."""
    return section[name] if name in section else empty
