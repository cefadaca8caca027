"""The kernel side of the Jupyter server's broker: the server's session, seen from one of its kernels."""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

import requests

from ..broker_contract import REJECTED_PARAM, SECRET_HEADER, BrokerAddress, token_digest
from ..errors import LoginRequired, OIDCError, TokenRefreshFailed
from ..oidc.backoff import backoff_delay
from ..oidc.observable import ObservableSession, SessionSnapshot, SessionState
from ..oidc.schedule import renew_at
from ..oidc.tokens import Identity
from ..settings import Settings

logger = logging.getLogger(__name__)


class BrokerSession(ObservableSession):
    """Duck-types the core `Session` for the MLflow plugin and the widget; the server owns and refreshes tokens.

    The kernel never sees a refresh token: it asks the broker for an access token when its copy is near
    expiry, and a background thread renews it ahead of time so idle kernels show a live state.
    """

    _refresher_name = "mlflow-oidc-broker"

    def __init__(self, settings: Settings, address: BrokerAddress, *, background_refresh: bool = True) -> None:
        super().__init__(background_refresh=background_refresh)
        self.settings = settings
        self.address = address
        self.url = address.url
        self._http = requests.Session()
        self._fetch_lock = threading.Lock()
        self._token: str | None = None
        self._fetched_at = 0.0
        self._expires_at: float | None = None
        self._identity: Identity | None = None
        self._renewal_failures = 0  # the refresher thread's own count
        self.login_url: str | None = None
        self.refresh_count = 0

    def __repr__(self) -> str:
        user = self._identity.username if self._identity else None
        return f"<BrokerSession {self.url} user={user} {self._state.value}>"

    # -- observing -------------------------------------------------------------------------------------------

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

    # -- tokens ----------------------------------------------------------------------------------------------

    def _renew_at(self, expires_at: float) -> float:
        # Later than the server renews its own (a full margin ahead): the server has a new token by then.
        return renew_at(expires_at, self._fetched_at, self.settings.refresh_margin / 2, share=0.2)

    def _fresh(self) -> bool:
        if not self._token or self._expires_at is None:
            return False
        return time.time() < self._renew_at(self._expires_at)

    def access_token(self) -> str:
        """The server session's access token, fetched again when this kernel's copy is near expiry."""
        token = self._token
        if token and self._fresh():
            return token
        return self._fetch()

    def token_rejected(self, token: str) -> str:
        """The tracking server answered 401 to `token`: ask the server to refresh unless it already did."""
        return self._fetch(rejected=token_digest(token))

    def refresh(self) -> None:
        """Fetch the server session's current token now."""
        self._fetch()

    def load_cached(self) -> bool:
        """True when the server is signed in (the kernel then uses its session)."""
        try:
            self._fetch()
        except LoginRequired:
            return False
        return True

    def _fetch(self, rejected: str | None = None) -> str:
        with self._fetch_lock:
            if rejected is None and self._token and self._fresh():
                return self._token  # another thread fetched while we waited
            try:
                response = self._http.get(
                    self.url,
                    params={REJECTED_PARAM: rejected} if rejected else None,
                    headers={SECRET_HEADER: self.address.secret},
                    timeout=self.settings.timeout + 20,
                )
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                self._set_state(
                    SessionState.REFRESH_FAILING if self._token else self._state,
                    f"The Jupyter server's sign-in broker cannot be reached ({type(exc).__name__}).",
                )
                raise TokenRefreshFailed(
                    f"The Jupyter server at {_origin(self.url)} cannot be reached for a token "
                    f"({type(exc).__name__}); is it still running?"
                ) from None
            if response.status_code == 200 and body.get("access_token"):
                with self._lock:
                    changed = body["access_token"] != self._token
                    self._token = body["access_token"]
                    self._fetched_at = time.time()
                    self._expires_at = float(body.get("expires_at") or time.time() + 60)
                    if body.get("identity"):
                        self._identity = Identity.from_dict(body["identity"])
                    if changed and self._state in (SessionState.SIGNED_IN, SessionState.REFRESH_FAILING):
                        self.refresh_count += 1
                self._set_state(SessionState.SIGNED_IN)
                self._start_refresher()
                return self._token
            message = str(body.get("message") or f"HTTP {response.status_code}")
            if response.status_code == 401:
                self.login_url = body.get("login_url") or self.login_url
                was_signed_in = self._token is not None
                with self._lock:
                    self._token = None
                self._set_state(
                    SessionState.LOGIN_REQUIRED if was_signed_in else SessionState.SIGNED_OUT,
                    f"The Jupyter server is not signed in to MLflow: {message}",
                )
                raise LoginRequired(f"The Jupyter server is not signed in to MLflow ({message}).")
            if response.status_code == 502:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, message)
                raise TokenRefreshFailed(f"The Jupyter server could not refresh its token: {message}")
            raise OIDCError(f"The Jupyter server's sign-in broker refused this kernel: {message}")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def forget(self) -> None:
        """Stop using the server's session in this kernel (the server stays signed in)."""
        with self._lock:
            self._token = None
        self._set_state(SessionState.SIGNED_OUT)

    def logout(self, **_: object) -> None:
        self.forget()
        return None

    def _refresh_when_due(self) -> float | None:
        expires_at = self._expires_at
        if not self._token or expires_at is None:
            return None
        delay = max(self._renew_at(expires_at) - time.time(), backoff_delay(self._renewal_failures))
        # Wait here, not in the loop: once the pause is over, renew without asking again whether it is due.
        if (delay > 0 and self._wake.wait(delay)) or self._stop.is_set():
            return 0.0
        try:
            self._fetch()
            self._renewal_failures = 0
        except LoginRequired:
            pass  # the state tells the widget
        except OIDCError as exc:
            self._renewal_failures += 1
            logger.warning("Broker token renewal failed: %s", exc)
            return backoff_delay(self._renewal_failures)
        return 0.0


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
