"""The kernel side of the Jupyter server's broker: the server's session, seen from one of its kernels."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import requests

from ..errors import LoginRequired, OIDCError, TokenRefreshFailed
from ..oidc.backoff import backoff_delay
from ..oidc.observable import ObservableSession, SessionSnapshot, SessionState
from ..oidc.tokens import Identity
from ..settings import Settings

logger = logging.getLogger(__name__)

# Contract: mlflow_oidc_jupyter/server/broker.py (the server exports these before it starts kernels).
URL_ENV = "MLFLOW_OIDC_BROKER_URL"
SECRET_ENV = "MLFLOW_OIDC_BROKER_SECRET"  # noqa: S105 - the variable's name
SECRET_HEADER = "X-MLflow-OIDC-Broker"  # noqa: S105 - a header name
UI_URL_ENV = "MLFLOW_OIDC_UI_URL"
#: How long one watch request may wait on the server for a change (seconds).
WATCH_WAIT = 25.0


def broker_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(url, secret) when this kernel was started by a Jupyter server with the extension."""
    env = os.environ if env is None else env
    url, secret = env.get(URL_ENV), env.get(SECRET_ENV)
    return (url, secret) if url and secret else None


def server_paths(broker_url: str) -> tuple[str, str]:
    """(login path, UI path) on the Jupyter server, relative to the origin the browser already uses."""
    path = urlsplit(broker_url).path
    prefix = path[: -len("oauth/broker")] if path.endswith("oauth/broker") else "/mlflow/"
    return prefix + "oauth/login", prefix


class BrokerSession(ObservableSession):
    """Duck-types the core `Session` for the MLflow plugin and the widget; the server owns and refreshes tokens.

    The kernel never sees a refresh token: it asks the broker for an access token when its copy is near
    expiry, and a background thread renews it ahead of time so idle kernels show a live state. A watcher thread
    long-polls the server's state, so a sign-in or sign-out on the server shows here at once.

    `detach()` (this kernel's `%mlflow_logout`) makes every MLflow call here fail until `attach()`, while the server
    and other kernels stay signed in.
    """

    _refresher_name = "mlflow-oidc-broker"

    def __init__(self, settings: Settings, url: str, secret: str, *, background_refresh: bool = True) -> None:
        super().__init__(background_refresh=background_refresh)
        self.settings = settings
        self.url = url
        self._secret = secret
        self._http = requests.Session()
        self._fetch_lock = threading.Lock()
        self._token: str | None = None
        self._fetched_at = 0.0
        self._expires_at: float | None = None
        self._identity: Identity | None = None
        self._renewal_failures = 0  # the refresher thread's own count
        self._server: dict = {}  # the server session's last known state (never a token)
        self._version = 0
        self._detached = False
        self._watcher: threading.Thread | None = None
        self.login_url: str | None = None
        self.ui_url: str | None = None
        self.refresh_count = 0

    def __repr__(self) -> str:
        user = self._identity.username if self._identity else None
        return f"<BrokerSession {self.url} user={user} {self._state.value}>"

    # -- observing -------------------------------------------------------------------------------------------

    @property
    def identity(self) -> Identity | None:
        return self._identity if self._token else None

    @property
    def detached(self) -> bool:
        return self._detached

    @property
    def server_identity(self) -> Identity | None:
        """Who the server is signed in as, whether or not this kernel uses it."""
        data = self._server.get("identity")
        return Identity.from_dict(data) if data and self._server.get("signed_in") else None

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            server = self._server
            signed_in = self._token is not None
            return SessionSnapshot(
                state=self._state,
                issuer=self.settings.issuer,
                client_id=self.settings.client_id,
                identity=self.identity,
                access_expires_at=self._expires_at if signed_in else None,
                refresh_expires_at=server.get("refresh_expires_at") if signed_in else None,
                refresh_count=int(server.get("refresh_count") or 0) if signed_in else 0,
                message=self._message,
                issued_at=server.get("issued_at") if signed_in else None,
            )

    # -- tokens ----------------------------------------------------------------------------------------------

    def _fresh(self) -> bool:
        if not self._token or self._expires_at is None:
            return False
        lifetime = max(0.0, self._expires_at - self._fetched_at)
        return self._expires_at - time.time() > min(self.settings.refresh_margin / 2, 0.2 * lifetime)

    def access_token(self) -> str:
        """The server session's access token, fetched again when this kernel's copy is near expiry."""
        token = self._token
        if token and self._fresh():
            return token
        return self._fetch()

    def token_rejected(self, token: str) -> str:
        """The tracking server answered 401 to `token`: ask the server to refresh unless it already did."""
        return self._fetch(rejected=hashlib.sha256(token.encode()).hexdigest())

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
        if self._detached:
            raise LoginRequired(
                "This kernel was signed out of MLflow with %mlflow_logout; run %mlflow_login to use the Jupyter "
                "server's sign-in again."
            )
        with self._fetch_lock:
            if rejected is None and self._token and self._fresh():
                return self._token  # another thread fetched while we waited
            try:
                response = self._http.get(
                    self.url,
                    params={"rejected": rejected} if rejected else None,
                    headers={SECRET_HEADER: self._secret},
                    # The server's session may wait for an unreachable provider up to the patience: so do we.
                    timeout=(self.settings.timeout, self.settings.timeout + self.settings.patience + 20),
                )
                body = response.json()
            except (requests.RequestException, ValueError) as exc:
                self._set_state(
                    SessionState.REFRESH_FAILING if self._token else self._state,
                    f"The Jupyter server's sign-in broker cannot be reached ({type(exc).__name__}).",
                )
                raise TokenRefreshFailed(
                    f"The Jupyter server at {self.url.split('/mlflow/')[0]} cannot be reached for a token "
                    f"({type(exc).__name__}); is it still running?"
                ) from None
            self._absorb(body)
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
                self._start_watcher()
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
                self._start_watcher()
                raise LoginRequired(f"The Jupyter server is not signed in to MLflow ({message}).")
            if response.status_code == 502:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, message)
                raise TokenRefreshFailed(f"The Jupyter server could not refresh its token: {message}")
            raise OIDCError(f"The Jupyter server's sign-in broker refused this kernel: {message}")

    def _absorb(self, body: dict) -> None:
        """Keep the server's state (without its token) from any broker answer."""
        state = {k: v for k, v in body.items() if k not in ("access_token", "token_type")}
        if "version" not in state:
            return
        with self._lock:
            self._server = state
            self._version = int(state["version"])
            self.ui_url = state.get("ui_url") or self.ui_url

    # -- watching the server ---------------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        if not self.background_refresh:
            return
        with self._lock:
            if self._watcher is not None and self._watcher.is_alive():
                return
            self._watcher = threading.Thread(target=self._watch, name="mlflow-oidc-broker-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """Long-poll the server's state; tell this kernel's listeners the moment it signs in or out."""
        failures = 0
        watch = requests.Session()
        while not self._stop.is_set():
            try:
                response = watch.get(
                    self.url,
                    params={"peek": "1", "since": str(self._version), "wait": str(WATCH_WAIT)},
                    headers={SECRET_HEADER: self._secret},
                    timeout=WATCH_WAIT + self.settings.timeout + 10,
                )
                body = response.json()
            except (requests.RequestException, ValueError):
                failures += 1
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            if response.status_code != 200:
                failures += 1
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            failures = 0
            before = self._server.get("signed_in"), (self._server.get("identity") or {}).get("subject")
            self._absorb(body)
            after = body.get("signed_in"), (body.get("identity") or {}).get("subject")
            if self._stop.is_set() or self._detached:
                continue
            if after[0] and (before != after or not self._token):
                self._try_fetch()  # signed in (again, or as someone else): take the new token now
            elif not after[0] and self._token:
                with self._lock:
                    self._token = None
                self._set_state(
                    SessionState.LOGIN_REQUIRED,
                    body.get("message") or "The Jupyter server signed out of MLflow.",
                )
            elif after[0]:
                self._notify()  # a refresh on the server: new expiries
        watch.close()

    def _try_fetch(self) -> None:
        try:
            self._fetch()
        except OIDCError as exc:
            logger.info("Broker token after a server change: %s", exc)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def forget(self) -> None:
        """Stop using the server's session in this kernel (the server stays signed in)."""
        self.detach()

    def detach(self) -> None:
        """This kernel's sign-out: MLflow calls here fail until `attach()`; the server and others stay signed in."""
        with self._lock:
            self._detached = True
            self._token = None
        self._set_state(SessionState.SIGNED_OUT, "This kernel was signed out with %mlflow_logout.")

    def attach(self) -> None:
        """Use the server's session again (after `detach()`)."""
        with self._lock:
            self._detached = False
            if self._state == SessionState.SIGNED_OUT:
                self._message = None

    def logout(self, **_: object) -> None:
        self.detach()
        return None

    def sign_out_server(self) -> None:
        """Sign the Jupyter server out of MLflow: the MLflow UI and every kernel using its session."""
        try:
            response = self._http.delete(
                self.url, headers={SECRET_HEADER: self._secret}, timeout=self.settings.timeout + 20
            )
            body = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise TokenRefreshFailed(
                f"The Jupyter server could not be reached to sign it out ({type(exc).__name__}); is it running?"
            ) from None
        if response.status_code != 200:
            raise OIDCError(f"The Jupyter server refused to sign out: {body.get('message') or response.status_code}")
        self._absorb(body)
        with self._lock:
            self._token = None
        self._set_state(SessionState.LOGIN_REQUIRED, "The Jupyter server was signed out of MLflow.")

    def close(self) -> None:
        super().close()
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=0.1)  # it may sit in a long poll; it is a daemon and ends with its next answer

    def _refresh_when_due(self) -> float | None:
        expires_at = self._expires_at
        if not self._token or expires_at is None:
            return None
        lifetime = max(1.0, expires_at - self._fetched_at)
        due = expires_at - min(self.settings.refresh_margin / 2, 0.2 * lifetime)
        delay = max(due - time.time(), backoff_delay(self._renewal_failures))
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


def server_state(url: str, secret: str, timeout: float = 10.0) -> dict | None:
    """The server session's state (never a token) right now, or None when the server cannot tell."""
    try:
        response = requests.get(url, params={"peek": "1"}, headers={SECRET_HEADER: secret}, timeout=timeout)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
