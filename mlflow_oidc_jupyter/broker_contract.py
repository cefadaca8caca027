"""The kernel broker's contract, one place for both sides: the Jupyter server answers, its kernels ask.

- The server exports, before any kernel starts, ``MLFLOW_OIDC_BROKER_URL`` (loopback URL of its endpoint,
  ``{base_url}{prefix}/oauth/broker``) and ``MLFLOW_OIDC_BROKER_SECRET`` (random per server start). Kernels inherit
  both.
- ``GET $MLFLOW_OIDC_BROKER_URL`` with header ``X-MLflow-OIDC-Broker: $MLFLOW_OIDC_BROKER_SECRET``:
  200 ``{"access_token", "token_type": "Bearer", "expires_at": <epoch s>, "identity": {...}}`` — a token valid for
  at least the session's refresh margin; 401 ``{"error": "login_required", "message", "login_url"}`` when the
  server is signed out (``login_url`` is a path on the Jupyter server: open it in the browser that shows
  JupyterLab); 403 ``{"error": "forbidden"}`` for a wrong secret; 502 ``{"error": "refresh_failed"}``;
  503 ``{"error": "not_configured"}``.
- ``?rejected=<token_digest(token) of a token the tracking server answered 401 to>``: the server refreshes once
  unless it already replaced that token, and answers with the new one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .settings import ENV_VARS, Settings

URL_ENV = "MLFLOW_OIDC_BROKER_URL"
SECRET_ENV = "MLFLOW_OIDC_BROKER_SECRET"  # noqa: S105 - the name of the variable, not a secret
SECRET_HEADER = "X-MLflow-OIDC-Broker"  # noqa: S105 - a header name
REJECTED_PARAM = "rejected"
#: The broker's path under the extension's prefix; the sign-in page is its sibling.
BROKER_PATH = ("oauth", "broker")
LOGIN_PATH = ("oauth", "login")


def token_digest(token: str) -> str:
    """How a kernel names a token to the server without sending it back (sha256, hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class BrokerAddress:
    """Where a kernel asks its Jupyter server for tokens, and the secret it presents."""

    url: str
    secret: str = field(repr=False)

    @property
    def ui_path(self) -> str:
        """The MLflow UI's path on the Jupyter server (`{base_url}{prefix}/`), relative to the browser's origin."""
        path = urlsplit(self.url).path
        suffix = "/".join(BROKER_PATH)
        return path[: -len(suffix)] if path.endswith(suffix) else path.rsplit("/", 1)[0] + "/"

    @property
    def login_path(self) -> str:
        """The server's sign-in page (the same browser as JupyterLab), relative to the browser's origin."""
        return self.ui_path + "/".join(LOGIN_PATH)


def server_serves(settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    """Whether the server's session serves a kernel with these settings: the server exports its issuer and client
    to its kernels, and its session serves only kernels that want those."""
    env = os.environ if env is None else env
    server_issuer = env.get(ENV_VARS["issuer"], "").rstrip("/")
    server_client = env.get(ENV_VARS["client_id"], "")
    return (not server_issuer or server_issuer == settings.issuer) and (
        not server_client or server_client == settings.client_id
    )


def broker_from_env(env: Mapping[str, str] | None = None) -> BrokerAddress | None:
    """The broker of the Jupyter server that started this kernel, if that server has the extension."""
    env = os.environ if env is None else env
    url, secret = env.get(URL_ENV), env.get(SECRET_ENV)
    return BrokerAddress(url, secret) if url and secret else None
