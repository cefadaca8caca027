"""What a Jupyter server's kernel broker and its kernels agree on: env vars, the secret header, paths, answers.

- The server exports, before any kernel starts, ``MLFLOW_OIDC_BROKER_URL`` (loopback URL of its
  ``{base_url}{prefix}/oauth/broker``), ``MLFLOW_OIDC_BROKER_SECRET`` (random per server start) and
  ``MLFLOW_OIDC_UI_URL`` (the MLflow UI's absolute URL as the server knows it at start). Kernels inherit them.
- ``GET $MLFLOW_OIDC_BROKER_URL`` with header ``X-MLflow-OIDC-Broker: $MLFLOW_OIDC_BROKER_SECRET``:
  200 ``{"access_token", "token_type": "Bearer", "expires_at": <epoch s>, "identity": {...}}`` — a token valid for
  at least the session's refresh margin; 401 ``{"error": "login_required", "message", "login_url"}`` when the
  server is signed out (``login_url`` is a path on the Jupyter server: open it in the browser that shows
  JupyterLab); 403 ``{"error": "forbidden"}`` for a wrong secret; 503 ``{"error": "not_configured"}``.
- ``?rejected=<sha256 hex of a token the tracking server answered 401 to>``: the server refreshes once unless it
  already replaced that token, and answers with the new one.
- Every answer also carries the session's state (no token): ``version``, ``state``, ``signed_in``, ``identity``,
  ``access_expires_at``, ``refresh_expires_at``, ``issued_at``, ``refresh_count``, ``message``, and ``ui_url`` (the
  MLflow UI as the user's browser last reached it: links printed in notebooks).
- ``?peek=1&since=<version>&wait=<seconds>``: only the state, answered once it differs from ``version`` (a long
  poll): how kernels learn at once that the server signed in or out.
- ``DELETE``: sign the server out (refresh token revoked): the MLflow UI and every kernel using it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

URL_ENV = "MLFLOW_OIDC_BROKER_URL"
SECRET_ENV = "MLFLOW_OIDC_BROKER_SECRET"  # noqa: S105 - the variable's name, not a secret
SECRET_HEADER = "X-MLflow-OIDC-Broker"  # noqa: S105 - a header name
#: The MLflow UI's absolute URL as the server knows it at start (kernels print run links to it).
UI_URL_ENV = "MLFLOW_OIDC_UI_URL"
#: Where the extension lives under the server's base_url unless its `prefix` setting says otherwise.
DEFAULT_PREFIX = "mlflow"
#: Routes below `{base_url}{prefix}/`.
BROKER_PATH = "oauth/broker"
LOGIN_PATH = "oauth/login"
LOGOUT_PATH = "oauth/logout"
#: How long one watch request may wait on the server for a change (seconds).
WATCH_WAIT = 25.0


def broker_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(url, secret) when this process was started by a Jupyter server with the extension."""
    env = os.environ if env is None else env
    url, secret = env.get(URL_ENV), env.get(SECRET_ENV)
    return (url, secret) if url and secret else None


def ui_url(broker_url: str) -> str:
    """The MLflow UI's URL (ending in `/`) next to the broker at `broker_url`."""
    return broker_url[: -len(BROKER_PATH)]


def server_paths(broker_url: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(login path, UI path) on the Jupyter server, relative to the origin the browser already uses.

    The broker's URL says where the UI is; a broker URL of another shape falls back to the UI URL the server
    exported (it carries the `prefix` setting), then to the default prefix.
    """
    env = os.environ if env is None else env
    path = urlsplit(broker_url).path
    if path.endswith(BROKER_PATH):
        prefix = path[: -len(BROKER_PATH)]
    else:
        prefix = urlsplit(env.get(UI_URL_ENV, "")).path or f"/{DEFAULT_PREFIX}/"
        prefix = prefix if prefix.endswith("/") else prefix + "/"
    return prefix + LOGIN_PATH, prefix
