"""The Session: single owner of one user's tokens; hands out fresh access tokens, refreshing single-flight."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from filelock import Timeout as FileLockTimeout

from ..errors import LoginFailed, LoginRequired, OIDCError, ProviderError, TokenRefreshFailed, TokenValidationError
from ..settings import Settings
from .backoff import backoff_delay
from .cache import TokenCache
from .client import OIDCClient, PendingAuthorization
from .flows import DevicePrompt, UrlPrompt, browser_login, device_login
from .observable import ObservableSession, SessionSnapshot, SessionState
from .schedule import next_refresh_at
from .tokens import Identity, TokenSet

logger = logging.getLogger(__name__)

#: Answers that end a session for good: only a new sign-in helps.
PERMANENT_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope", "access_denied"}


class Session(ObservableSession):
    """One user's sign-in with one provider and client.

    `access_token()` is cheap and thread-safe; it refreshes only when the token would be valid for less than
    `min(refresh_margin, 25% of its lifetime)`. One refresh at a time: a thread lock in this process, a file lock
    on the cache entry across processes (lock, re-read, refresh only if still needed, write).
    """

    _refresher_name = "oidc-session-refresher"

    def __init__(
        self,
        settings: Settings,
        *,
        cache: TokenCache | None = None,
        use_cache: bool = True,
        client: OIDCClient | None = None,
        background_refresh: bool = True,
    ) -> None:
        super().__init__(background_refresh=background_refresh)
        self.settings = settings
        self.client = client or OIDCClient(settings)
        self.cache = cache if cache is not None else (TokenCache(settings.cache_dir) if use_cache else None)
        self._refresh_lock = threading.Lock()
        self._tokens: TokenSet | None = None
        self._key: str | None = None
        self._before_signing_in: tuple[SessionState, str | None] = (SessionState.SIGNED_OUT, None)
        self._failures = 0
        self._retry_at = 0.0
        #: Token refreshes this session made at the provider (not counting tokens adopted from the cache).
        self.refresh_count = 0
        #: Fresh tokens picked up from the cache after another process refreshed them.
        self.adopted_count = 0
        self.refresh_failures = 0

    def __repr__(self) -> str:
        user = self.identity.username if self.identity else None
        return f"<Session {self.settings.issuer} client={self.settings.client_id} user={user} {self._state.value}>"

    # -- observing -------------------------------------------------------------------------------------------

    @property
    def identity(self) -> Identity | None:
        tokens = self._tokens
        return tokens.identity if tokens else None

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            tokens = self._tokens
            return SessionSnapshot(
                state=self._state,
                issuer=self.settings.issuer,
                client_id=self.settings.client_id,
                identity=tokens.identity if tokens else None,
                access_expires_at=tokens.expires_at if tokens else None,
                refresh_expires_at=tokens.refresh_expires_at if tokens else None,
                refresh_count=self.refresh_count,
                message=self._message,
                issued_at=tokens.issued_at if tokens else None,
            )

    # -- signing in ------------------------------------------------------------------------------------------

    def login_device(self, on_prompt: DevicePrompt, *, cancel: threading.Event | None = None) -> Identity:
        """Device flow: `on_prompt` shows the URL and user code; blocks until approved, denied or expired."""
        return self._login(lambda: device_login(self.client, on_prompt, cancel=cancel))

    def login_browser(
        self,
        *,
        on_url: UrlPrompt | None = None,
        open_browser: bool = True,
        timeout: float = 300.0,
        cancel: threading.Event | None = None,
    ) -> Identity:
        """Auth code + PKCE with a loopback redirect; `on_url(url, browser_opened)` shows the URL."""
        return self._login(
            lambda: browser_login(self.client, on_url=on_url, open_browser=open_browser, timeout=timeout, cancel=cancel)
        )

    def login_client_credentials(self) -> Identity:
        """Sign in as the client itself (bots, CI)."""
        return self._login(self.client.client_credentials)

    def start_login(self, redirect_uri: str) -> PendingAuthorization:
        """Auth code + PKCE through someone else's redirect URI: send the user to `.url`, then `finish_login`."""
        pending = self.client.authorization_request(redirect_uri)
        with self._lock:
            if self._state != SessionState.SIGNING_IN:
                self._before_signing_in = (self._state, self._message)
        self._set_state(SessionState.SIGNING_IN)
        return pending

    def finish_login(self, pending: PendingAuthorization, callback_url: str) -> Identity:
        """Complete `start_login` with the full URL the provider redirected the browser to."""
        return self._login(lambda: self.client.exchange_code(pending, callback_url))

    def _login(self, flow: Callable[[], TokenSet]) -> Identity:
        # A failed sign-in goes back to where the session stood before it began (start_login may have begun it):
        # a user who was signed in stays signed in with the tokens they have.
        with self._lock:
            if self._state == SessionState.SIGNING_IN:
                before, before_message = self._before_signing_in
            else:
                before, before_message = self._state, self._message
        self._set_state(SessionState.SIGNING_IN)
        try:
            tokens = flow()
        except (LoginFailed, ProviderError, TokenValidationError) as exc:
            self._set_state(before, str(exc) or before_message)
            raise
        except BaseException:
            self._set_state(before, before_message)
            raise
        self.sign_in(tokens)
        assert tokens.identity is not None
        return tokens.identity

    def sign_in(self, tokens: TokenSet) -> None:
        """Adopt a validated token set (from any flow) as this session's and persist it."""
        if tokens.identity is None:
            raise TokenValidationError("A token set without a validated identity cannot sign in.")
        key = TokenCache.entry_key(self.settings.issuer, self.settings.client_id, tokens.identity.subject)
        previous_key = self._key
        if self.cache is not None:
            with self.cache.lock(key):
                self.cache.save(key, tokens)
                self.cache.set_current(self.settings.issuer, self.settings.client_id, key)
            if previous_key is not None and previous_key != key:
                self.cache.delete(previous_key)  # switching user: the previous user's tokens leave the disk
        with self._lock:
            self._tokens, self._key = tokens, key
            self._failures, self._retry_at = 0, 0.0
        self._set_state(SessionState.SIGNED_IN)
        self._start_refresher()

    def load_cached(self) -> bool:
        """Resume the last sign-in of this issuer + client from the cache (e.g. after `mlflow-oidc login`)."""
        if self.cache is None:
            return False
        key = self.cache.current_key(self.settings.issuer, self.settings.client_id)
        tokens = self.cache.load(key) if key else None
        if tokens is None or tokens.identity is None:
            return False
        if not tokens.refresh_token and tokens.expires_in() <= 0 and not self._can_reacquire(tokens):
            return False
        with self._lock:
            self._tokens, self._key = tokens, key
            self._failures, self._retry_at = 0, 0.0
        self._set_state(SessionState.SIGNED_IN)
        self._start_refresher()
        return True

    # -- using -----------------------------------------------------------------------------------------------

    def access_token(self) -> str:
        """A bearer token valid for at least min(refresh_margin, 25% of its lifetime); refreshes when needed."""
        tokens = self._tokens
        if tokens is None:
            # A sign-in elsewhere (`mlflow-oidc login`, another kernel) lands in the cache: pick it up.
            if self.load_cached():
                return self.access_token()
            raise self._login_required()
        if tokens.is_fresh(self.settings.refresh_margin):
            return tokens.access_token
        return self._ensure_fresh(tokens).access_token

    def token_rejected(self, token: str) -> str:
        """The server refused `token` (HTTP 401): refresh unless another thread already replaced it."""
        with self._lock:
            current = self._tokens
        if current is None:
            raise self._login_required()
        if current.access_token != token:
            return current.access_token
        return self._ensure_fresh(current, force=True).access_token

    def refresh(self) -> TokenSet:
        """Refresh now (e.g. after the user changed roles); returns the new token set."""
        tokens = self._tokens
        if tokens is None:
            raise self._login_required()
        return self._ensure_fresh(tokens, force=True)

    def _login_required(self) -> LoginRequired:
        """Why this session holds no tokens; `_forget` sets the reason together with dropping them."""
        with self._lock:
            return LoginRequired(self._message or "You are not signed in.")

    def _ensure_fresh(self, seen: TokenSet, force: bool = False) -> TokenSet:
        margin = self.settings.refresh_margin
        if not self._refresh_lock.acquire(blocking=False):
            # Someone is refreshing: a token that is still comfortably valid beats waiting for them.
            if not force and seen.expires_in() > min(2.0, 0.2 * seen.lifetime):
                return seen
            if not self._refresh_lock.acquire(timeout=self.settings.timeout * 4 + 30):
                raise TokenRefreshFailed("Timed out waiting for another thread's token refresh; try again.")
        try:
            current = self._tokens
            if current is None:
                raise self._login_required()
            if current is not seen and (current.is_fresh(margin) or force):
                return current  # refreshed while we waited
            if not force and time.time() < self._retry_at and current.expires_in() > 0:
                return current  # backing off after a transient failure; the token still works
            return self._refresh_locked(current, force=force)
        finally:
            self._refresh_lock.release()

    def _refresh_locked(self, current: TokenSet, *, force: bool) -> TokenSet:
        """Holding the thread lock: take the file lock, re-read, refresh if still needed, write."""
        self._set_state(SessionState.REFRESHING, self._message if self._failures else None)
        attempt = 0
        while True:
            try:
                tokens = self._refresh_shared(current, force=force)
            except ProviderError as exc:
                if not exc.transient and exc.error in PERMANENT_ERRORS:
                    raise self._end(f"Your session with {self.settings.issuer} has ended ({exc.error}).") from None
                failure = exc
            except TokenValidationError as exc:
                raise self._end(f"The refreshed tokens were rejected: {exc}") from None
            except FileLockTimeout:
                failure = ProviderError("Another process holds the token cache lock for too long.", transient=True)
            else:
                with self._lock:
                    self._failures, self._retry_at = 0, 0.0
                self._set_state(SessionState.SIGNED_IN)
                self._wake.set()
                return tokens
            # A failure that may pass: keep serving a still-valid token, retry later with backoff.
            self.refresh_failures += 1
            with self._lock:
                self._failures += 1
                delay = backoff_delay(self._failures)
                self._retry_at = time.time() + delay
            message = f"Token refresh is failing, retrying: {failure}"
            logger.warning("%s", message)
            self._set_state(SessionState.REFRESH_FAILING, message)
            latest = self._tokens or current
            if latest.expires_in() > 0 and not force:
                return latest
            attempt += 1
            if attempt >= 3 or self._stop.is_set():
                raise TokenRefreshFailed(
                    f"Could not refresh the access token: {failure} The session is kept; try again shortly."
                ) from None
            time.sleep(delay)

    def _refresh_shared(self, current: TokenSet, *, force: bool) -> TokenSet:
        margin = self.settings.refresh_margin
        key = self._key
        if self.cache is None or key is None:
            return self._store(self._grant(current), counted=True)
        with self.cache.lock(key, timeout=self.settings.timeout * 3 + 10):
            cached = self.cache.load(key)
            if cached is None:
                raise self._end("You signed out (in another process or terminal).")
            if cached.access_token != current.access_token and cached.issued_at >= current.issued_at:
                # Another process refreshed: its refresh token is the live one now (rotation).
                if cached.is_fresh(margin):
                    self.adopted_count += 1
                    return self._store(cached, counted=False)
                current = cached
            tokens = self._grant(current)
            self.cache.save(key, tokens)
        return self._store(tokens, counted=True)

    def _grant(self, current: TokenSet) -> TokenSet:
        if current.refresh_token:
            return self.client.refresh(current)
        if self._can_reacquire(current):
            return self.client.client_credentials()
        raise ProviderError("The session has no refresh token.", error="invalid_grant")

    def _can_reacquire(self, tokens: TokenSet) -> bool:
        return tokens.grant == "client_credentials" and bool(self.settings.client_secret)

    def _store(self, tokens: TokenSet, *, counted: bool) -> TokenSet:
        with self._lock:
            self._tokens = tokens
            if counted:
                self.refresh_count += 1
        return tokens

    def _end(self, reason: str) -> LoginRequired:
        """The session cannot continue: forget its tokens (and the cache entry); returns the error to raise."""
        self._forget(SessionState.LOGIN_REQUIRED, reason)
        return LoginRequired(reason)

    def _forget(
        self, state: SessionState, message: str | None = None, *, take_file_lock: bool = False
    ) -> TokenSet | None:
        """Drop the tokens, cache entry first; returns the tokens dropped.

        Other threads may ask for a token meanwhile (the refresher and MLflow calls race): until the entry is
        gone they still get the old tokens, and the moment they find none they also find why. Dropping the
        tokens first would let them re-read the entry being deleted, or see no tokens and no reason.
        """
        with self._lock:
            key = self._key
        if self.cache is not None and key is not None:
            if take_file_lock:  # not while refreshing: that path holds it already, and it is not reentrant
                with self.cache.lock(key):
                    self.cache.delete(key)
            else:
                self.cache.delete(key)
            self.cache.clear_current(self.settings.issuer, self.settings.client_id, key)
        with self._lock:
            tokens, self._tokens, self._key = self._tokens, None, None
            self._state, self._message = state, message
        self._notify()
        return tokens

    # -- signing out -----------------------------------------------------------------------------------------

    def logout(self, *, revoke: bool = True, post_logout_redirect_uri: str | None = None) -> str | None:
        """Revoke the refresh token, delete the cache entry; returns the provider's end-session URL, if any."""
        tokens = self._forget(SessionState.SIGNED_OUT, take_file_lock=True)
        end_session_url = None
        if tokens is not None:
            if revoke and tokens.refresh_token:
                try:
                    self.client.revoke(tokens.refresh_token)
                except OIDCError as exc:
                    logger.warning("Could not revoke the refresh token: %s", exc)
            try:
                end_session_url = self.client.end_session_url(post_logout_redirect_uri)
            except OIDCError as exc:
                logger.warning("No end-session URL: %s", exc)
        return end_session_url

    # -- background refresh ----------------------------------------------------------------------------------

    def _next_refresh_at(self, tokens: TokenSet) -> float:
        return next_refresh_at(tokens, self.settings.refresh_margin, not_before=self._retry_at)

    def _refresh_when_due(self) -> float | None:
        tokens = self._tokens
        if tokens is None:
            return None
        delay = self._next_refresh_at(tokens) - time.time()
        if delay > 0:
            return delay
        try:
            # Still fresh here means the refresh token's idle timeout is what is due.
            self._ensure_fresh(tokens, force=tokens.is_fresh(self.settings.refresh_margin))
        except LoginRequired:
            pass  # state and listeners already tell the story
        except OIDCError as exc:
            logger.warning("Background token refresh failed: %s", exc)
            return 1.0
        except Exception:
            logger.exception("Background token refresh crashed; retrying")
            return 5.0
        return 0.0
