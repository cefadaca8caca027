"""What the hub and a single-user server agree on: the token endpoint, its scope, its answers and env vars.

- The hub serves ``GET {JUPYTERHUB_API_URL}/mlflow-oidc/users/<name>/token`` to a caller whose JupyterHub token
  carries ``custom:mlflow-oidc:token`` for user ``<name>`` and is *that* user's own token (a user's server holds
  one as ``JUPYTERHUB_API_TOKEN``). Never another user's, never a service's.
- 200 ``{"access_token", "token_type": "Bearer", "expires_at": <epoch s>, "identity": {...}}``: an access token
  valid for at least the refresh margin. The refresh token never leaves the hub, which alone refreshes it.
- ``?rejected=<sha256 hex of an access token the tracking server answered 401 to>``: the hub refreshes once
  unless it already replaced that token.
- 401 ``{"error": "login_required", "message", "login_url"}``: sign in at the hub again (``login_url``).
- 409 ``{"error": "no_refresh_token", "message"}``: the hub's sign-in holds no refresh token (provider setup).
- 502 ``{"error": "refresh_failed", "message"}``: the provider could not be reached or failed; try again.
- 503 ``{"error": "not_configured", "message"}``: the hub keeps no auth_state (``enable_auth_state`` off).
"""

from __future__ import annotations

#: The JupyterHub custom scope that lets a token fetch its user's MLflow access tokens.
SCOPE = "custom:mlflow-oidc:token"
#: Path of the token endpoint below the hub's API URL (``{JUPYTERHUB_API_URL}{path}``), per user.
TOKEN_PATH = "/mlflow-oidc/users/{name}/token"  # noqa: S105 - a URL path, not a token
#: Set in every single-user server's environment by `configure_hub`: "1" means "take the session from the hub".
HUB_SESSION_ENV = "MLFLOW_OIDC_HUB_SESSION"
#: JupyterHub's own variables in a single-user server's environment.
API_URL_ENV = "JUPYTERHUB_API_URL"
API_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # noqa: S105 - the variable's name
USER_ENV = "JUPYTERHUB_USER"
BASE_URL_ENV = "JUPYTERHUB_BASE_URL"
#: Key of our validated token set inside the hub's auth_state (next to oauthenticator's own keys).
AUTH_STATE_KEY = "mlflow_oidc"
