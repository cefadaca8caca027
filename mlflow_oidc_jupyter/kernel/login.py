"""One kernel's sign-in: the session it uses, the views told about it, its sign-in thread and its sign-out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ..broker_contract import UI_URL_ENV, broker_from_env
from ..errors import OIDCError
from ..oidc.default import AnySession, DefaultSession, peek_default_session, set_default_session
from ..settings import Settings
from .choice import FLOWS, Choice, choose
from .grace import GraceSession
from .links import RunLink, RunLinks
from .presenters import Presenter, Presenters
from .scope import SCOPE_CACHE, SignOut, scope_text
from .signin import SignInThread, holder_flow, own_flow
from .signout import sign_out, sign_out_server
from .ticker import Ticker

__all__ = ["FLOWS", "GraceSession", "KernelLogin", "Presenter", "SignOut"]

logger = logging.getLogger(__name__)

#: Grace waiters start a new sign-in at most this often after one failed.
RETRY_SIGN_IN_AFTER = 5.0


class KernelLogin:
    """Owns this kernel's session and its sign-in threads; MLflow requests in the kernel use the session."""

    def __init__(self) -> None:
        self.session: AnySession | None = None
        self.flow: str = "device"
        self.grace_period = 0.0
        self.ui_url: str | None = None
        self.scope = SCOPE_CACHE
        self.fresh_sign_in = False
        self.current_run: RunLink | None = None
        self.ticker = Ticker()
        self.views = Presenters()
        self._signing = SignInThread(self.views)
        self._choice: Choice | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._saved_auth = os.environ.get("MLFLOW_TRACKING_AUTH")
        self._saved_default = peek_default_session()
        self._owned: list[AnySession] = []
        self._links = RunLinks(self.absolute_ui_url, self._on_run)

    # -- choosing the session --------------------------------------------------------------------------------

    def configure(
        self, settings: Settings, *, flow: str | None = None, grace_period: float | None = None, new: bool = False
    ) -> None:
        """Use `settings` with `flow` (None: the server's sign-in when this kernel has one, else device); see
        `choice.choose` for `new` and what is reused."""
        choice = choose(settings, flow=flow, new=new, current=self._choice)
        self.flow, self.scope, self.ui_url = choice.flow, choice.scope, choice.ui_url
        self.fresh_sign_in = new
        if grace_period is not None:
            self.grace_period = max(0.0, grace_period)
        if choice.owned:
            self._owned.append(choice.session)
        choice.session.attach()
        self._choice = choice
        self._use(choice.session)
        self._links.install()

    def scope_text(self) -> str:
        cache = self.session.cache if self.session is not None else None
        return scope_text(self.scope, str(cache.directory) if cache is not None else None)

    def absolute_ui_url(self) -> str | None:
        """The MLflow UI as the user's browser reaches it (links printed in the notebook), when this server has it."""
        session = self.session
        if session is not None and session.ui_url:
            return session.ui_url
        return os.environ.get(UI_URL_ENV) if broker_from_env() else None

    def _on_run(self, run: RunLink) -> None:
        self.current_run = run

    def _use(self, session: AnySession) -> None:
        if session is not self.session:
            if self._remove_listener is not None:
                self._remove_listener()
            if self.session is not None and self.session in self._owned:
                self.session.close()
            self.session = session
            self._remove_listener = session.add_listener(self.views.update)
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
        self.views.attach(presenter)
        if self.session is not None:
            presenter.update(self.session.snapshot())

    def detach(self, presenter: Presenter) -> None:
        self.views.detach(presenter)

    def tick(self) -> None:
        """Let text presenters print what they collected (they do so on the main thread only)."""
        self.views.tick()

    # -- signing in ------------------------------------------------------------------------------------------

    @property
    def signing_in(self) -> bool:
        return self._signing.running

    def resume(self) -> bool:
        """Reuse a sign-in that still works (this kernel's, the cache's, or the Jupyter server's); no prompt."""
        session = self.session
        assert session is not None
        if self.fresh_sign_in:
            return False  # --new: a sign-in of its own, whatever exists
        try:
            if not session.signed_in and not session.load_cached():
                return False
            session.access_token()  # proves the session still works, refreshing if needed
        except OIDCError as exc:
            logger.info("No reusable sign-in: %s", exc)
            return False
        return True

    def sign_in(self, presenter: Presenter | None = None) -> None:
        """Start the interactive sign-in in a background thread (a no-op while one runs); prompts go to `presenter`."""
        choice = self._choice
        assert choice is not None and self.session is not None
        if self.signing_in:
            return
        self.views.prompt_to = presenter
        flow = (
            holder_flow(choice.session, self.views)
            if choice.own is None
            else own_flow(choice.own, self.flow, self.views)
        )
        self._signing.start(flow, on_success=self._signed_in)

    def _signed_in(self) -> None:
        self.fresh_sign_in = False  # done: a later %mlflow_login may reuse it

    def wait(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Block (the cell) until the sign-in ends; Ctrl-C / interrupt cancels it. True when signed in."""
        self._signing.wait(timeout, tick)
        return self.session is not None and self.session.signed_in

    def cancel(self) -> None:
        self._signing.cancel()

    def login_required(self) -> None:
        """A grace waiter needs a sign-in: start one unless one runs or one just failed."""
        if self.signing_in or time.monotonic() - self._signing.last_failure_at < RETRY_SIGN_IN_AFTER:
            return
        self.sign_in()

    # -- signing out and unloading ---------------------------------------------------------------------------

    def logout(self, *, server: bool = False) -> SignOut:
        """Sign out, and say whom it affected: this kernel, the Jupyter server (UI and its notebooks), the cache."""
        self.cancel()
        if server:
            return sign_out_server(self.session)
        return sign_out(self.session, self.scope, self.scope_text())

    def close(self) -> None:
        """Stop every thread this kernel layer started and undo what it set (tokens stay in the cache)."""
        self.cancel()
        self._links.uninstall()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self.views.close()
        self.ticker.close()
        for session in {id(s): s for s in [*self._owned, self.session] if s is not None}.values():
            session.close()
        self._owned.clear()
        self.session = None
        self._choice = None
        set_default_session(self._saved_default)
        if self._saved_auth is None:
            os.environ.pop("MLFLOW_TRACKING_AUTH", None)
        else:
            os.environ["MLFLOW_TRACKING_AUTH"] = self._saved_auth
