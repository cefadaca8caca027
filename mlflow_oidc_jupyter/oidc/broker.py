"""The session of the Jupyter server that started this process, asked of its broker (see `broker_contract`)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import requests

from ..broker_contract import SECRET_HEADER, WATCH_WAIT, server_paths
from ..errors import LoginRequired, OIDCError, TokenRefreshFailed
from ..settings import Settings
from .backoff import backoff_delay
from .observable import SessionSnapshot, SessionState
from .remote import RemoteSession
from .tokens import Identity

logger = logging.getLogger(__name__)


class BrokerSession(RemoteSession):
    """Duck-types the core `Session` for the MLflow plugin and the widget; the server owns and refreshes tokens.

    The kernel never sees a refresh token: it asks the broker for an access token when its copy is near
    expiry, and a background thread renews it ahead of time so idle kernels show a live state. A watcher thread
    long-polls the server's state, so a sign-in or sign-out on the server shows here at once.

    `detach()` (this kernel's `%mlflow_logout`) makes every MLflow call here fail until `attach()`, while the server
    and other kernels stay signed in.
    """

    _refresher_name = "mlflow-oidc-broker"
    holder = "the Jupyter server"

    def __init__(self, settings: Settings, url: str, secret: str, *, background_refresh: bool = True) -> None:
        super().__init__(settings, background_refresh=background_refresh)
        self.url = self.holder_url = url
        self._secret = secret
        self._renewal_failures = 0  # the refresher thread's own count
        self._server: dict[str, Any] = {}  # the server session's last known state (never a token)
        self._version = 0
        self._detached = False
        self._watcher: threading.Thread | None = None
        self.login_url = server_paths(url)[0]

    def __repr__(self) -> str:
        user = self._identity.username if self._identity else None
        return f"<BrokerSession {self.url} user={user} {self._state.value}>"

    # -- observing -------------------------------------------------------------------------------------------

    @property
    def detached(self) -> bool:
        return self._detached

    @property
    def holder_identity(self) -> Identity | None:
        """Who the server is signed in as, whether or not this kernel uses it."""
        data = self._server.get("identity")
        return Identity.from_dict(data) if data and self._server.get("signed_in") else None

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            snapshot = super().snapshot()
            if self._token is None:
                return snapshot
            server = self._server
            return replace(
                snapshot,
                refresh_expires_at=server.get("refresh_expires_at"),
                refresh_count=int(server.get("refresh_count") or 0),
                issued_at=server.get("issued_at"),
            )

    # -- tokens ----------------------------------------------------------------------------------------------

    def _digest(self, token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def _request(self, rejected: str | None) -> requests.Response:
        try:
            return self._http.get(
                self.url,
                params={"rejected": rejected} if rejected else None,
                headers={SECRET_HEADER: self._secret},
                # The server's session may wait for an unreachable provider up to the patience: so do we.
                timeout=(self.settings.timeout, self.settings.timeout + self.settings.patience + 20),
            )
        except requests.RequestException as exc:
            origin = "://".join(urlsplit(self.url)[:2])
            raise TokenRefreshFailed(
                f"The Jupyter server at {origin} cannot be reached for a token ({type(exc).__name__}); "
                "is it still running?"
            ) from None

    def _fetch(self, rejected: str | None = None) -> str:
        if self._detached:
            raise LoginRequired(
                "This kernel was signed out of MLflow with %mlflow_logout; run %mlflow_login to use the Jupyter "
                "server's sign-in again."
            )
        try:
            return super()._fetch(rejected)
        except LoginRequired:
            self._start_watcher()  # tells this kernel the moment the server is signed in again
            raise

    def _take(self, body: dict[str, Any]) -> str:
        token = super()._take(body)
        self._start_watcher()
        return token

    def _heard(self, body: dict[str, Any]) -> None:
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
                body = response.json() if response.status_code == 200 else None
            except (requests.RequestException, ValueError):
                body = None
            if body is None:
                failures += 1
                self._stop.wait(min(30.0, 2.0**failures))
                continue
            failures = 0
            before = self._server.get("signed_in"), (self._server.get("identity") or {}).get("subject")
            self._heard(body)
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

    def sign_out_holder(self) -> None:
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
        self._heard(body)
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


def server_state(url: str, secret: str, timeout: float = 10.0) -> dict[str, Any] | None:
    """The server session's state (never a token) right now, or None when the server cannot tell."""
    try:
        response = requests.get(url, params={"peek": "1"}, headers={SECRET_HEADER: secret}, timeout=timeout)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
