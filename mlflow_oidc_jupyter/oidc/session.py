"""The Session: single owner of one user's tokens; hands out fresh access tokens, refreshing single-flight."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from ..errors import LoginFailed, LoginRequired, OIDCError, ProviderError, TokenRefreshFailed, TokenValidationError
from ..settings import Settings
from .cache import TokenCache
from .client import OIDCClient, PendingAuthorization
from .flows import DevicePrompt, UrlPrompt, browser_login, device_login
from .observable import ObservableSession, SessionSnapshot, SessionState
from .outage import Outage
from .schedule import next_refresh_at
from .tokens import Identity, TokenSet

logger = logging.getLogger(__name__)

#: Answers that end a session for good: only a new sign-in helps.
PERMANENT_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope", "access_denied"}
#: A server's 401 forces a refresh at most this often: one that keeps refusing must not keep the provider busy.
FORCED_REFRESH_INTERVAL = 20.0
#: How long to wait for another process's hold on the cache entry before re-reading the cache instead (seconds).
CACHE_LOCK_WAIT = 2.0
#: How often a failed cache write is retried (seconds).
SAVE_RETRY = 5.0


class _CacheBusy(Exception):
    """Another process holds the cache entry's lock (it is refreshing): look at the cache again shortly."""


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
        #: Notified after every refresh attempt and token change; callers without a valid token wait on it.
        self._attempted = threading.Condition(threading.Lock())
        self._attempts = 0
        self._tokens: TokenSet | None = None
        self._key: str | None = None
        self._before_signing_in: tuple[SessionState, str | None] = (SessionState.SIGNED_OUT, None)
        self._outage = Outage(settings.patience)
        self._last_forced = -FORCED_REFRESH_INTERVAL
        #: The refresh token of a refresh that got no answer: the provider may have spent it.
        self._uncertain: str | None = None
        self._unsaved = False
        self._save_retry_at = 0.0
        self._save_problem: str | None = None
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
            lambda: browser_login(
                self.client,
                on_url=on_url,
                open_browser=open_browser,
                timeout=timeout,
                cancel=cancel,
                redirect_path=self.settings.redirect_path,
            )
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
        self._unsaved, self._save_problem = False, None
        if self.cache is not None:
            try:
                with self.cache.lock(key):
                    self.cache.save(key, tokens)
                    self.cache.set_current(self.settings.issuer, self.settings.client_id, key)
                if previous_key is not None and previous_key != key:
                    self.cache.delete(previous_key)  # switching user: the previous user's tokens leave the disk
            except OSError as exc:
                self._save_failed(exc)
        with self._lock:
            self._tokens, self._key, self._uncertain = tokens, key, None
            self._outage.ended()
        self._set_state(SessionState.SIGNED_IN, self._save_problem)
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
            self._tokens, self._key, self._uncertain = tokens, key, None
            self._outage.ended()
        self._set_state(SessionState.SIGNED_IN)
        self._start_refresher()
        return True

    # -- using -----------------------------------------------------------------------------------------------

    def access_token(self) -> str:
        """A bearer token valid for at least min(refresh_margin, 25% of its lifetime); refreshes when needed.

        While the current token is valid nothing waits for the provider (the refresher renews it). Once it has
        expired, calls wait for a refresh, up to `settings.patience` if the provider is unreachable.
        """
        tokens = self._tokens
        if tokens is None:
            # A sign-in elsewhere (`mlflow-oidc login`, another kernel) lands in the cache: pick it up.
            if self.load_cached():
                return self.access_token()
            raise self._login_required()
        if tokens.is_fresh(self.settings.refresh_margin):
            return tokens.access_token
        return self._ensure_fresh(tokens).access_token

    def fresh_token(self) -> str | None:
        """The access token if it is fresh now, else None (then `access_token` refreshes or waits); never blocks."""
        tokens = self._tokens
        return tokens.access_token if tokens is not None and tokens.is_fresh(self.settings.refresh_margin) else None

    def token_rejected(self, token: str) -> str:
        """The server refused `token` (HTTP 401): the token to send again.

        A new one if another thread replaced it, or after a refresh; the same one when refreshing cannot help
        (a server that keeps refusing gets at most one forced refresh per FORCED_REFRESH_INTERVAL).
        """
        with self._lock:
            current = self._tokens
        if current is None:
            raise self._login_required()
        if current.access_token != token:
            return current.access_token
        with self._lock:
            recently = time.monotonic() - self._last_forced < FORCED_REFRESH_INTERVAL
            if recently and current.is_fresh(self.settings.refresh_margin):
                return token
            self._last_forced = time.monotonic()
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

    def _ensure_fresh(self, seen: TokenSet, *, force: bool = False) -> TokenSet:
        """A fresh token (with `force`: any token but `seen`, which a server refused): refresh, or wait for one.

        Never sleeps holding the refresh lock: one attempt per hold, waits happen outside it on `_attempted`.
        """
        margin = self.settings.refresh_margin
        deadline: float | None = None
        while True:
            current = self._tokens
            if current is None:
                raise self._login_required()
            if current.access_token != seen.access_token and (force or current.is_fresh(margin)):
                return current  # refreshed meanwhile
            # A token a server refused is no better than an expired one.
            usable = current.expires_in() > 0 and not force
            if usable and (self._refresher_running() or time.time() < self._outage.retry_at):
                self._wake.set()
                return current  # a valid token: nothing waits for the provider
            generation = self._attempts
            if time.time() >= self._outage.retry_at and self._refresh_lock.acquire(blocking=False):
                try:
                    fresh = self._attempt(current)
                finally:
                    self._refresh_lock.release()
                if fresh is not None:
                    return fresh
                if usable:
                    return current
                continue
            if usable:
                return current  # a refresh is under way, and this token still works
            deadline = deadline or self._outage.deadline(current.expires_at)
            if time.time() >= deadline:
                raise TokenRefreshFailed(self._outage.gave_up_message(self.settings.issuer))
            self._show_waiting(current)
            until = deadline if self._refresh_lock.locked() else min(deadline, self._outage.retry_at)
            self._wait_for_attempt(generation, current, until)

    def _wait_for_attempt(self, generation: int, current: TokenSet, until: float) -> None:
        """Sleep (holding no lock) until an attempt ends, the tokens change, or `until`."""

        def changed() -> bool:
            return self._attempts != generation or self._tokens is not current

        with self._attempted:
            self._attempted.wait_for(changed, timeout=max(0.0, until - time.time()))

    def _refresher_running(self) -> bool:
        thread = self._refresher
        return self.background_refresh and thread is not None and thread.is_alive() and not self._stop.is_set()

    def _attempt(self, current: TokenSet) -> TokenSet | None:
        """Holding the refresh lock: one refresh attempt, no sleeping; None after a failure that may pass."""
        if not self._outage.ongoing:
            self._set_state(SessionState.REFRESHING, self._message if self._unsaved else None)
        watchdog = threading.Timer(self.settings.timeout, self._no_answer_yet, args=(current,))
        watchdog.daemon = True
        watchdog.start()
        try:
            tokens = self._refresh_shared(current)
        except ProviderError as exc:
            if not exc.transient and exc.error in PERMANENT_ERRORS:
                raise self._end(f"Your session with {self.settings.issuer} has ended ({exc.error}). {exc}") from None
            self._failed(str(exc), current)
            return None
        except TokenValidationError as exc:
            raise self._end(f"The refreshed tokens were rejected: {exc}") from None
        except LoginRequired:
            raise  # the session ended (signed out elsewhere): state and reason are set
        except _CacheBusy:
            # Another process is refreshing this entry: its tokens will be in the cache shortly.
            self._outage.retry_at = time.time() + CACHE_LOCK_WAIT / 2
            return None
        except BaseException:
            self._set_state(SessionState.SIGNED_IN if self._tokens else self._state, self._message)
            raise
        finally:
            watchdog.cancel()
            with self._attempted:
                self._attempts += 1
                self._attempted.notify_all()
        self._recovered()
        return tokens

    def _failed(self, reason: str, current: TokenSet) -> None:
        self.refresh_failures += 1
        latest = self._tokens or current
        with self._lock:
            first = not self._outage.ongoing
            self._outage.failed(reason, latest.expires_at)
        if latest.expires_in() > 0:
            message = f"Token refresh is failing, retrying: {reason}"
            self._set_state(SessionState.REFRESH_FAILING, message)
        else:
            message = self._outage.waiting_message()
            self._set_state(SessionState.PROVIDER_UNREACHABLE, message)
            self._leave_note(message)
        if first:
            logger.warning("%s", message)
        else:
            logger.debug("%s", message)

    def _recovered(self) -> None:
        with self._lock:
            lasted = self._outage.ended()
        if lasted is not None:
            logger.warning("The identity provider answered again after %.1f s; the session goes on", lasted)
            if self.cache is not None and self._key is not None:
                self.cache.clear_note(self._key)
        self._set_state(SessionState.SIGNED_IN, self._save_problem)
        with self._attempted:
            self._attempted.notify_all()
        self._wake.set()

    def _show_waiting(self, current: TokenSet) -> None:
        """A call is waiting for a token from a failing provider: say so (once) where listeners and `status` see."""
        if self._state == SessionState.PROVIDER_UNREACHABLE or not self._outage.ongoing:
            return  # a refresh that merely takes a moment is no outage
        message = self._outage.waiting_message()
        self._set_state(SessionState.PROVIDER_UNREACHABLE, message)
        self._leave_note(message)

    def _no_answer_yet(self, current: TokenSet) -> None:
        """The watchdog of a refresh still waiting for the provider's answer after `settings.timeout`."""
        if not self._refresh_lock.locked() or self._tokens is not current:
            return
        with self._lock:
            self._outage.since = self._outage.since or time.time()
            self._outage.reason = (
                f"No answer to a token refresh for {self.settings.timeout:.0f} s: waiting for it, since the "
                "provider may already have spent the refresh token."
            )
        if current.expires_in() > 0:
            self._set_state(SessionState.REFRESH_FAILING, f"Token refresh is slow: {self._outage.reason}")
        else:
            self._show_waiting(current)

    def _leave_note(self, message: str) -> None:
        """Tell other processes (`mlflow-oidc status`) that this session is waiting for the provider."""
        if self.cache is not None and self._key is not None:
            since = self._outage.since or time.time()
            self.cache.write_note(self._key, {"state": "provider_unreachable", "since": since,
                                              "pid": os.getpid(), "message": message})  # fmt: skip

    def waiting_note(self) -> dict[str, Any] | None:
        """What a live process sharing this sign-in reported while waiting for the provider (for `status`)."""
        if self.cache is None or self._key is None:
            return None
        note = self.cache.read_note(self._key)
        if not note or note.get("state") != "provider_unreachable":
            return None
        try:
            os.kill(int(note["pid"]), 0)
        except (KeyError, TypeError, ValueError, ProcessLookupError):
            return None  # that process has ended
        except PermissionError:
            pass  # alive, another user's (a shared cache folder)
        return note

    def _refresh_shared(self, current: TokenSet) -> TokenSet:
        """Take the cache entry's lock, re-read, refresh only if still needed, write."""
        key = self._key
        if self.cache is None or key is None:
            return self._store(self._grant(current), counted=True)
        lock: FileLock | None = None
        try:
            lock = self.cache.lock(key, timeout=CACHE_LOCK_WAIT)
            lock.acquire()
        except FileLockTimeout:
            adopted = self._adopt_cached(key, current)
            if adopted is not None:
                return adopted
            raise _CacheBusy() from None
        except OSError as exc:  # the lock file cannot be made (full disk, read-only folder): go on without it
            logger.warning("Token cache lock unavailable (%s); refreshing without it", exc.strerror or exc)
            lock = None
        try:
            adopted = self._adopt_cached(key, current, locked=True)
            if adopted is not None:
                return adopted
            latest = self._latest_cached(key, current)
            if self._uncertain is not None and self._uncertain == latest.refresh_token:
                self._check_still_active(latest)
            try:
                tokens = self._grant(latest)
            except ProviderError as exc:
                if exc.uncertain:
                    self._uncertain = latest.refresh_token
                raise
            self._uncertain = None
            logger.debug("Refreshed the tokens (those from %s)", "the cache" if latest is not current else "memory")
            self._save(key, tokens)
        finally:
            if lock is not None:
                lock.release()
        return self._store(tokens, counted=True)

    def _adopt_cached(self, key: str, current: TokenSet, *, locked: bool = False) -> TokenSet | None:
        """Fresh tokens another process wrote to the cache, or None; with the lock held, a gone entry ends this."""
        assert self.cache is not None
        try:
            cached = self.cache.load(key)
        except OSError as exc:
            logger.warning("Token cache unreadable (%s); using the tokens in memory", exc.strerror or exc)
            return None
        if cached is None:
            if locked and not self._unsaved:
                raise self._end("You signed out (in another process or terminal).")
            return None
        if self._newer(cached, current) and cached.is_fresh(self.settings.refresh_margin):
            logger.debug("Using the tokens another process refreshed")
            self.adopted_count += 1
            return self._store(cached, counted=False)
        return None

    def _latest_cached(self, key: str, current: TokenSet) -> TokenSet:
        """The newest of our tokens and the cache's: after a rotation elsewhere, only its refresh token is live."""
        assert self.cache is not None
        try:
            cached = self.cache.load(key)
        except OSError:
            return current
        return cached if cached is not None and self._newer(cached, current) else current

    @staticmethod
    def _newer(cached: TokenSet, current: TokenSet) -> bool:
        return cached.access_token != current.access_token and cached.issued_at >= current.issued_at

    def _check_still_active(self, tokens: TokenSet) -> None:
        """The last refresh with this token got no answer: resend it only if the provider has not spent it."""
        active = self.client.refresh_token_active(tokens)
        if active is False:
            raise ProviderError(
                "The identity provider took the refresh token but its answer never arrived; the token is spent.",
                error="invalid_grant",
            )

    def _save(self, key: str, tokens: TokenSet) -> None:
        """Write refreshed tokens; when the disk refuses, keep them in memory, warn, and retry later."""
        assert self.cache is not None
        try:
            self.cache.save(key, tokens)
        except OSError as exc:
            self._save_failed(exc)
        else:
            self._unsaved, self._save_problem = False, None

    def _save_failed(self, exc: OSError) -> None:
        self._unsaved = True
        self._save_retry_at = time.time() + SAVE_RETRY
        self._save_problem = (
            f"The token cache in {self.settings.cache_dir} cannot be written ({exc.strerror or exc}): the new "
            "tokens are kept in memory only and saving is retried; other processes using this cache may sign out."
        )
        logger.warning("%s", self._save_problem)

    def _retry_save(self) -> None:
        """The refresher's retry of a failed cache write (unless another process wrote newer tokens since)."""
        tokens, key = self._tokens, self._key
        if self.cache is None or key is None or tokens is None:
            return
        try:
            with self.cache.lock(key, timeout=CACHE_LOCK_WAIT):
                cached = self.cache.load(key)
                if cached is not None and self._newer(cached, tokens):
                    self._store(cached, counted=False)
                else:
                    self.cache.save(key, tokens)
        except OSError as exc:  # includes the lock's Timeout
            self._save_failed(exc)
            return
        self._unsaved, self._save_problem = False, None
        logger.warning("The token cache is writable again: tokens saved")
        if self._state == SessionState.SIGNED_IN:
            self._set_state(SessionState.SIGNED_IN)

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
        with self._attempted:
            self._attempted.notify_all()
        return tokens

    def _end(self, reason: str) -> LoginRequired:
        """The session cannot continue: forget its tokens (and the cache entry); returns the error to raise."""
        self._forget(SessionState.LOGIN_REQUIRED, reason)
        return LoginRequired(reason)

    def _forget(
        self, state: SessionState, message: str | None = None, *, take_file_lock: bool = False
    ) -> TokenSet | None:
        """Drop the tokens, cache entry first; returns the newest tokens dropped (from memory or the cache).

        Other threads may ask for a token meanwhile (the refresher and MLflow calls race): until the entry is
        gone they still get the old tokens, and the moment they find none they also find why. Dropping the
        tokens first would let them re-read the entry being deleted, or see no tokens and no reason.
        """
        with self._lock:
            key = self._key
        cached = None
        if self.cache is not None and key is not None:
            if take_file_lock:  # not while refreshing: that path holds it already, and it is not reentrant
                with self.cache.lock(key):
                    cached = self.cache.load(key)  # another process may have rotated the refresh token since
                    self.cache.delete(key)
            else:
                self.cache.delete(key)
            self.cache.clear_current(self.settings.issuer, self.settings.client_id, key)
        with self._lock:
            tokens, self._tokens, self._key = self._tokens, None, None
            self._state, self._message = state, message
        with self._attempted:
            self._attempted.notify_all()
        self._notify()
        if cached is not None and (tokens is None or self._newer(cached, tokens)):
            return cached
        return tokens

    # -- signing out -----------------------------------------------------------------------------------------

    def logout(self, *, revoke: bool = True, post_logout_redirect_uri: str | None = None) -> str | None:
        """Revoke the live refresh token, delete the cache entry; returns the provider's end-session URL, if any.

        The live refresh token is the newest one, re-read from the cache: another process sharing it may have
        rotated the one this session holds.
        """
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
        due = next_refresh_at(tokens, self.settings.refresh_margin, not_before=self._outage.retry_at)
        return min(due, self._save_retry_at) if self._unsaved else due

    def _refresh_when_due(self) -> float | None:
        """One round of the refresher: it waits (on the lock or the clock), it never polls in a busy loop."""
        tokens = self._tokens
        if tokens is None:
            return None
        if self._unsaved and time.time() >= self._save_retry_at:
            self._retry_save()
        delay = self._next_refresh_at(tokens) - time.time()
        if delay > 0:
            return delay
        if not self._refresh_lock.acquire(timeout=CACHE_LOCK_WAIT):
            return 0.0  # another thread is refreshing: look again once it is done (acquire blocks meanwhile)
        try:
            current = self._tokens
            if current is None or self._next_refresh_at(current) > time.time():
                return 0.0  # refreshed (or signed out) while we waited for the lock
            # Still fresh here means the refresh token's idle timeout is what is due.
            self._attempt(current)
        except LoginRequired:
            pass  # state and listeners already tell the story
        except Exception:
            logger.exception("Background token refresh crashed; retrying")
            return 5.0
        finally:
            self._refresh_lock.release()
        return 0.0
