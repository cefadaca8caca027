"""A single-user server's session under JupyterHub: its user's access tokens, asked of the hub, which refreshes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import requests

from ..errors import ConfigError, OIDCError, TokenRefreshFailed
from ..oidc.backoff import backoff_delay
from ..oidc.remote import RemoteSession
from ..settings import Settings
from .contract import API_TOKEN_ENV, API_URL_ENV, HUB_SESSION_ENV, TOKEN_PATH, USER_ENV
from .keeper import fingerprint

logger = logging.getLogger(__name__)

#: How long to keep asking a hub that cannot be reached (a hub restart) before giving up on one request.
UNREACHABLE_BUDGET = 45.0


@dataclass(frozen=True)
class HubEndpoint:
    """Where this server's user gets tokens from the hub, and the credential it asks with."""

    url: str
    api_token: str
    user: str

    def __repr__(self) -> str:
        return f"HubEndpoint(url={self.url!r}, user={self.user!r})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> HubEndpoint | None:
        """The endpoint when this server was started by a hub configured with `configure_hub`; else None."""
        env = os.environ if env is None else env
        if env.get(HUB_SESSION_ENV) != "1":
            return None
        missing = [name for name in (API_URL_ENV, API_TOKEN_ENV, USER_ENV) if not env.get(name)]
        if missing:
            raise ConfigError(
                f"{HUB_SESSION_ENV}=1 but {', '.join(missing)} is not set: this server was not started by JupyterHub."
            )
        url = env[API_URL_ENV].rstrip("/") + TOKEN_PATH.format(name=quote(env[USER_ENV], safe=""))
        return cls(url=url, api_token=env[API_TOKEN_ENV], user=env[USER_ENV])


class HubSession(RemoteSession):
    """Duck-types the core `Session` for the server extension: the hub holds and refreshes the tokens.

    This server never sees a refresh token; it asks the hub with its own JUPYTERHUB_API_TOKEN, which only ever
    gets this server's user's tokens. Signing in and out happens at the hub.
    """

    _refresher_name = "mlflow-oidc-hub-session"
    holder = "the hub"
    #: 409: the hub holds no tokens for this user (signed in before the hub kept them); 503: its provider is off.
    login_statuses = frozenset({401, 409, 503})

    def __init__(self, settings: Settings, endpoint: HubEndpoint, *, background_refresh: bool = False) -> None:
        super().__init__(settings, background_refresh=background_refresh)
        self.endpoint = endpoint
        self.holder_url = endpoint.url

    def __repr__(self) -> str:
        return f"<HubSession {self.endpoint.url} user={self.endpoint.user} {self._state.value}>"

    def load_cached(self) -> bool:
        """True when the hub holds a sign-in for this user (there is no local cache to load)."""
        try:
            self._fetch()
        except OIDCError:
            return False
        return True

    def _digest(self, token: str) -> str:
        return fingerprint(token)

    def _request(self, rejected: str | None) -> requests.Response:
        """One answer from the hub; a hub that is restarting is asked again until it answers or time is up."""
        deadline = time.monotonic() + UNREACHABLE_BUDGET
        failures = 0
        while True:
            try:
                response = self._http.get(
                    self.endpoint.url,
                    params={"rejected": rejected} if rejected else None,
                    headers={"Authorization": f"token {self.endpoint.api_token}"},
                    timeout=self.settings.timeout + 20,
                )
                if response.status_code not in (502, 503, 504) or response.headers.get("Content-Type", "").startswith(
                    "application/json"
                ):
                    return response
                failure = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                failure = type(exc).__name__
            failures += 1
            pause = backoff_delay(failures, cap=2.0)
            if time.monotonic() + pause > deadline:
                raise TokenRefreshFailed(
                    f"The hub at {self.endpoint.url.split('/hub/')[0]} cannot be reached for a token ({failure}); "
                    "is it running?"
                )
            time.sleep(pause)

    def _refresh_when_due(self) -> float | None:
        return None  # the hub keeps the session alive; this server asks when it needs a token
