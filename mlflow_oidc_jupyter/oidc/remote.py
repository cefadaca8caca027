"""A session whose tokens another party holds and refreshes (a Jupyter server, a hub): this process keeps a copy
of the access token, asks for it again near its expiry, and shows the holder's answers as session states."""

from __future__ import annotations

import abc
import threading
import time
from typing import Any

import requests

from ..errors import LoginRequired, OIDCError, TokenRefreshFailed
from .observable import ObservableSession, SessionSnapshot, SessionState
from .schedule import renew_at
from .tokens import Identity


def token_answer(access_token: str, expires_at: float | None, identity: Identity | None) -> dict[str, Any]:
    """The holder's 200 answer, as RemoteSession reads it (never a refresh or ID token)."""
    return {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_at": expires_at,
        "identity": identity.to_dict() if identity else None,
    }


class RemoteSession(ObservableSession):
    """The holder answers 200 `{"access_token", "expires_at", "identity"}`, or an error `{"message", "login_url"}`.

    A subclass says how to ask (`_request`) and how it names the holder and a token it saw refused (`_digest`).
    """

    #: Statuses that mean "the holder has no sign-in for us" (sign in there again).
    login_statuses: frozenset[int] = frozenset({401})
    #: Who holds the tokens, as messages name it (lower case: it may stand inside a sentence).
    holder: str | None = "the token holder"

    def __init__(self, settings: Any, *, background_refresh: bool) -> None:
        super().__init__(background_refresh=background_refresh)
        self.settings = settings
        self._http = requests.Session()
        self._fetch_lock = threading.Lock()
        self._token: str | None = None
        self._fetched_at = 0.0
        self._expires_at: float | None = None
        self._identity: Identity | None = None
        #: Where to sign in at the holder (a path on its origin), as it last said.
        self.login_url: str | None = None
        self.refresh_count = 0

    @abc.abstractmethod
    def _request(self, rejected: str | None) -> requests.Response:
        """One request to the holder; raises TokenRefreshFailed, saying what to check, when it cannot be reached."""

    @abc.abstractmethod
    def _digest(self, token: str) -> str:
        """How the holder wants a refused token named (never the token itself)."""

    def _heard(self, body: dict[str, Any]) -> None:
        """Every answer of the holder passes here (a subclass may keep more of it than the token; never a token)."""

    @property
    def _holder_said(self) -> str:
        """The holder's name at the start of a sentence."""
        holder = self.holder or "the token holder"
        return holder[:1].upper() + holder[1:]

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
        # Later than the holder renews its own (a full margin ahead): the holder has a new token by then.
        return renew_at(expires_at, self._fetched_at, self.settings.refresh_margin / 2, share=0.2)

    def _fresh(self) -> bool:
        if not self._token or self._expires_at is None:
            return False
        return time.time() < self._renew_at(self._expires_at)

    def access_token(self) -> str:
        """The holder's access token, asked for again when this copy is near expiry."""
        return self.fresh_token() or self._fetch()

    def fresh_token(self) -> str | None:
        """This copy of the access token if it is fresh now, else None (then `access_token` asks); never blocks."""
        token = self._token
        return token if token and self._fresh() else None

    def token_rejected(self, token: str) -> str:
        """The tracking server answered 401 to `token`: the holder refreshes unless it already did."""
        return self._fetch(rejected=self._digest(token))

    def refresh(self) -> None:
        """Ask the holder for its current token now."""
        self._fetch()

    def load_cached(self) -> bool:
        """True when the holder is signed in (this process then uses its session)."""
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
                response = self._request(rejected)
            except TokenRefreshFailed as exc:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, str(exc))
                raise
            try:
                body = response.json()
            except ValueError:
                body = {}  # not JSON: reported below by its status
            self._heard(body)
            if response.status_code == 200 and body.get("access_token"):
                return self._take(body)
            message = str(body.get("message") or f"HTTP {response.status_code}")
            if response.status_code in self.login_statuses:
                self.login_url = body.get("login_url") or self.login_url
                had_token = self._token is not None
                with self._lock:
                    self._token = None
                reason = f"{self._holder_said} is not signed in to MLflow: {message}"
                self._set_state(SessionState.LOGIN_REQUIRED if had_token else SessionState.SIGNED_OUT, reason)
                raise LoginRequired(reason)
            if response.status_code == 502:
                self._set_state(SessionState.REFRESH_FAILING if self._token else self._state, message)
                raise TokenRefreshFailed(f"{self._holder_said} could not refresh its token: {message}")
            raise OIDCError(f"{self._holder_said} refused this token request: {message}")

    def _take(self, body: dict[str, Any]) -> str:
        with self._lock:
            if self._token and body["access_token"] != self._token:
                self.refresh_count += 1
            self._token = body["access_token"]
            self._fetched_at = time.time()
            self._expires_at = float(body.get("expires_at") or time.time() + 60)
            if body.get("identity"):
                self._identity = Identity.from_dict(body["identity"])
        self._set_state(SessionState.SIGNED_IN)
        self._start_refresher()
        return body["access_token"]

    # -- lifecycle -------------------------------------------------------------------------------------------

    def forget(self) -> None:
        """Stop using the holder's session here until asked again (the holder stays signed in)."""
        with self._lock:
            self._token = None
        self._set_state(SessionState.SIGNED_OUT)

    def logout(self, **_: Any) -> str | None:
        """Signing out is the holder's: forget here; the caller sends the browser to the holder's sign-out."""
        self.forget()
        return None
