"""A single-user server's session under JupyterHub: its user's access tokens, asked of the hub, which refreshes."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import requests

from ..errors import ConfigError, LoginRequired, OIDCError, TokenRefreshFailed
from ..oidc.observable import ObservableSession, SessionSnapshot, SessionState
from ..oidc.tokens import Identity
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


class HubSession(ObservableSession):
    """Duck-types the core `Session` for the server extension: the hub holds and refreshes the tokens.

    This server never sees a refresh token; it asks the hub with its own JUPYTERHUB_API_TOKEN, which only ever
    gets this server's user's tokens. Signing in and out happens at the hub.
    """

    _refresher_name = "mlflow-oidc-hub-session"

    def __init__(self, settings: Settings, endpoint: HubEndpoint, *, background_refresh: bool = False) -> None:
        super().__init__(background_refresh=background_refresh)
        self.settings = settings
        self.endpoint = endpoint
        self._http = requests.Session()
        self._fetch_lock = threading.Lock()
        self._token: str | None = None
        self._fetched_at = 0.0
        self._expires_at: float | None = None
        self._identity: Identity | None = None
        #: The hub's sign-in page (a path on the hub's origin), set when the hub says to sign in again.
        self.login_url: str | None = None
        self.refresh_count = 0

    def __repr__(self) -> str:
        return f"<HubSession {self.endpoint.url} user={self.endpoint.user} {self._state.value}>"

    @property
    def identity(self) -> Identity | None:
        return self._identity if self._token else None

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            return SessionSnapshot(
                state=self._state,
                issuer=self.settings.issuer,
                client_id=self.settings.client_id,
                identity=self.identity,
                access_expires_at=self._expires_at if self._token else None,
                refresh_count=self.refresh_count,
                message=self._message,
            )

    def _fresh(self) -> bool:
        if not self._token or self._expires_at is None:
            return False
        lifetime = max(0.0, self._expires_at - self._fetched_at)
        return self._expires_at - time.time() > min(self.settings.refresh_margin / 2, 0.2 * lifetime)

    def access_token(self) -> str:
        """This user's access token from the hub, asked again when this server's copy is near expiry."""
        token = self._token
        if token and self._fresh():
            return token
        return self._fetch()

    def token_rejected(self, token: str) -> str:
        """The tracking server answered 401 to `token`: the hub refreshes unless it already did."""
        return self._fetch(rejected=fingerprint(token))

    def refresh(self) -> None:
        self._fetch()

    def load_cached(self) -> bool:
        """True when the hub holds a sign-in for this user (there is no local cache to load)."""
        try:
            self._fetch()
        except OIDCError:
            return False
        return True

    def _get(self, rejected: str | None) -> requests.Response:
        """One answer from the hub; a hub that is restarting is asked again until it answers or time is up."""
        deadline = time.monotonic() + UNREACHABLE_BUDGET
        pause = 0.25
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
            if time.monotonic() + pause > deadline:
                raise TokenRefreshFailed(
                    f"The hub at {self.endpoint.url.split('/hub/')[0]} cannot be reached for a token ({failure}); "
                    "is it running?"
                )
            time.sleep(pause)
            pause = min(2.0, pause * 2)

    def _fetch(self, rejected: str | None = None) -> str:
        with self._fetch_lock:
            if rejected is None and self._token and self._fresh():
                return self._token  # another thread fetched while we waited
            try:
                response = self._get(rejected)
                body = response.json()
            except TokenRefreshFailed as exc:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, str(exc))
                raise
            except ValueError:
                body = {}  # not JSON: reported below by its status
            if response.status_code == 200 and body.get("access_token"):
                identity = Identity.from_dict(body["identity"]) if body.get("identity") else None
                with self._lock:
                    if self._token and body["access_token"] != self._token:
                        self.refresh_count += 1
                    self._token = body["access_token"]
                    self._fetched_at = time.time()
                    self._expires_at = float(body.get("expires_at") or time.time() + 60)
                    self._identity = identity
                self._set_state(SessionState.SIGNED_IN)
                return self._token
            message = str(body.get("message") or f"The hub answered HTTP {response.status_code}.")
            if response.status_code in (401, 409, 503):
                self.login_url = body.get("login_url") or self.login_url
                had_token = self._token is not None
                with self._lock:
                    self._token = None
                self._set_state(SessionState.LOGIN_REQUIRED if had_token else SessionState.SIGNED_OUT, message)
                raise LoginRequired(message)
            if response.status_code == 502:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, message)
                raise TokenRefreshFailed(message)
            raise OIDCError(f"The hub refused this server's token request: {message}")

    def forget(self) -> None:
        """Stop using the hub's session here until asked again (the hub stays signed in)."""
        with self._lock:
            self._token = None
        self._set_state(SessionState.SIGNED_OUT)

    def logout(self, **_: object) -> str | None:
        """Signing out is the hub's: forget here; the caller sends the browser to the hub's logout."""
        self.forget()
        return None

    def _refresh_when_due(self) -> float | None:
        return None  # the hub keeps the session alive; this server asks when it needs a token
