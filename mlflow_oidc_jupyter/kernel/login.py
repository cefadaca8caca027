"""One kernel's sign-in: its token source, the views attached to it, and MLflow in this process pointed at it."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..errors import OIDCError
from ..oidc.default import DefaultSession, peek_default_session, set_default_session
from ..oidc.observable import SessionSnapshot, SessionState
from ..settings import Settings
from .choosing import choose_source, server_ui_path
from .grace import GraceSession
from .presenter import Presenter, Presenters
from .signin import SignInThread
from .sources import KernelSession, SignOut, TokenSource

logger = logging.getLogger(__name__)

FLOWS = ("device", "browser", "client-credentials")
#: Grace waiters start a new sign-in at most this often after one failed.
RETRY_SIGN_IN_AFTER = 5.0

__all__ = ["FLOWS", "GraceSession", "KernelLogin", "Presenter"]


class KernelLogin:
    """Owns this kernel's token source and its sign-in thread; MLflow requests in the kernel use its session."""

    def __init__(self) -> None:
        self.source: TokenSource | None = None
        self.grace_period = 0.0
        self.presenters = Presenters()
        self.ui_url: str | None = None
        self.last_refresh_at: float | None = None
        self._thread = SignInThread(self._sign_in_done)
        self._remove_listener: Callable[[], None] | None = None
        self._saved_auth = os.environ.get("MLFLOW_TRACKING_AUTH")
        self._saved_default = peek_default_session()
        self._last_refresh_count = 0
        self._owned: list[KernelSession] = []

    @property
    def session(self) -> KernelSession | None:
        return self.source.session if self.source is not None else None

    @property
    def flow(self) -> str:
        return self.source.flow if self.source is not None else "device"

    # -- choosing the session --------------------------------------------------------------------------------

    def configure(self, settings: Settings, *, flow: str | None = None, grace_period: float | None = None) -> None:
        """Use `settings` with `flow` (None: the server's sign-in when this kernel has one, else device)."""
        if grace_period is not None:
            self.grace_period = max(0.0, grace_period)
        self.ui_url = server_ui_path()
        source, new = choose_source(settings, flow, self.source)
        if new:
            self._owned.append(source.session)
        self._use(source)

    def _use(self, source: TokenSource) -> None:
        previous = self.session
        self.source = source
        if source.session is not previous:
            if self._remove_listener is not None:
                self._remove_listener()
            if previous is not None and previous in self._owned:
                self._owned.remove(previous)
                previous.close()
            self._last_refresh_count = source.session.snapshot().refresh_count
            self._remove_listener = source.session.add_listener(self._on_snapshot)
        self._activate()

    def _activate(self) -> None:
        """Point MLflow in this process at the session: auth provider `oidc`, tracking URI when given."""
        session = self.session
        assert session is not None
        installed: DefaultSession = GraceSession(session, self) if self.grace_period > 0 else session
        set_default_session(installed)  # what the `oidc` auth provider asks for a token
        # MLflow reads this per request to select its auth provider; it names the plugin, it holds no secret.
        os.environ["MLFLOW_TRACKING_AUTH"] = "oidc"
        if session.settings.tracking_uri:
            import mlflow

            mlflow.set_tracking_uri(session.settings.tracking_uri)

    # -- presenting ------------------------------------------------------------------------------------------

    def attach(self, presenter: Presenter) -> None:
        self.presenters.add(presenter)
        if self.session is not None:
            presenter.update(self.session.snapshot())

    def detach(self, presenter: Presenter) -> None:
        self.presenters.remove(presenter)

    def tick(self) -> None:
        """Let text presenters print what they collected (they do so on the main thread only)."""
        self.presenters.tick()

    def _on_snapshot(self, snapshot: SessionSnapshot) -> None:
        if snapshot.state == SessionState.SIGNED_IN and (
            snapshot.refresh_count != self._last_refresh_count or self.last_refresh_at is None
        ):
            self._last_refresh_count = snapshot.refresh_count
            self.last_refresh_at = time.time()
        self.presenters.each(lambda p: p.update(snapshot))

    # -- signing in ------------------------------------------------------------------------------------------

    @property
    def signing_in(self) -> bool:
        return self._thread.running

    def resume(self) -> bool:
        """Reuse a sign-in that still works (this kernel's, the cache's, or the Jupyter server's); no prompt."""
        session = self.session
        assert session is not None
        try:
            if not session.signed_in and not session.load_cached():
                return False
            session.access_token()  # proves the session still works, refreshing if needed
        except OIDCError as exc:
            logger.info("No reusable sign-in: %s", exc)
            return False
        self.last_refresh_at = self.last_refresh_at or time.time()
        return True

    def sign_in(self) -> None:
        """Start the interactive sign-in in a background thread (a no-op while one runs)."""
        source = self.source
        assert source is not None
        self._thread.start(lambda cancel: source.sign_in(self.presenters, cancel))

    def _sign_in_done(self, failure: str | None) -> None:
        if failure is None:
            self.last_refresh_at = time.time()
        else:
            self.presenters.failed(failure)

    def wait(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Block (the cell) until the sign-in ends; Ctrl-C / interrupt cancels it. True when signed in."""
        self._thread.wait(timeout, tick)
        return self.session is not None and self.session.signed_in

    def cancel(self) -> None:
        self._thread.cancel()

    def login_required(self) -> None:
        """A grace waiter needs a sign-in: start one unless one runs or one just failed."""
        if self.signing_in or time.monotonic() - self._thread.last_failure_at < RETRY_SIGN_IN_AFTER:
            return
        self.sign_in()

    # -- signing out and unloading ---------------------------------------------------------------------------

    def logout(self) -> SignOut | None:
        """Sign this kernel out; says what happened and where to go next (e.g. the provider's sign-out)."""
        self.cancel()
        if self.source is None:
            return None
        return self.source.sign_out()

    def close(self) -> None:
        """Stop every thread this kernel layer started and undo what it set (tokens stay in the cache)."""
        self.cancel()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self.presenters.close()
        for session in {id(s): s for s in [*self._owned, self.session] if s is not None}.values():
            session.close()
        self._owned.clear()
        self.source = None
        set_default_session(self._saved_default)
        if self._saved_auth is None:
            os.environ.pop("MLFLOW_TRACKING_AUTH", None)
        else:
            os.environ["MLFLOW_TRACKING_AUTH"] = self._saved_auth
