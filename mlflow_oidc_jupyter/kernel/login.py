"""One kernel's sign-in: picks the session (the Jupyter server's or its own), runs flows off the main thread."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import LoginRequired, OIDCError
from ..oidc.client import DeviceAuthorization
from ..oidc.default import DefaultSession, peek_default_session, set_default_session
from ..oidc.observable import Listener, SessionSnapshot
from ..oidc.session import Session
from ..oidc.tokens import Identity
from ..settings import Settings
from .broker import UI_URL_ENV, BrokerSession, broker_from_env, server_paths, server_state
from .links import RunLink, RunLinks
from .ticker import Ticker

logger = logging.getLogger(__name__)

FLOWS = ("device", "browser", "client-credentials")
#: How long an interactive sign-in may take before we give up (the device code usually expires earlier).
SIGN_IN_TIMEOUT = 900.0
#: While the server's broker says "signed out", ask again this often.
BROKER_POLL = 1.0
#: Grace waiters start a new sign-in at most this often after one failed.
RETRY_SIGN_IN_AFTER = 5.0


#: Who a sign-in serves, said in every output about it (see docs/sign-in.md).
SCOPE_SERVER = "server"
SCOPE_KERNEL = "kernel"
SCOPE_CACHE = "cache"


def scope_text(scope: str, cache_dir: str | None = None) -> str:
    """The people-facing words for a scope."""
    if scope == SCOPE_SERVER:
        return "the Jupyter server's sign-in, shared with the MLflow UI and every notebook using it"
    if scope == SCOPE_KERNEL:
        return "this kernel only (the Jupyter server, the MLflow UI and other notebooks keep theirs)"
    where = f" in {cache_dir}" if cache_dir else ""
    return f"this kernel and every program sharing the token cache{where} (mlflow-oidc CLI, other kernels)"


@dataclass(frozen=True)
class SignOut:
    """What `%mlflow_logout` did, in words that say whom it affected."""

    message: str
    end_session_url: str | None = None


class Presenter(Protocol):
    """What a view of the sign-in (widget or text) is told; it may be called from any thread."""

    def device_prompt(self, device: DeviceAuthorization) -> None: ...
    def link_prompt(self, url: str, note: str) -> None: ...
    def update(self, snapshot: SessionSnapshot) -> None: ...
    def failed(self, message: str) -> None: ...
    def close(self) -> None: ...


AnySession = Session | BrokerSession


class KernelLogin:
    """Owns this kernel's session and its sign-in threads; MLflow requests in the kernel use the session."""

    def __init__(self) -> None:
        self.session: AnySession | None = None
        self.flow: str = "device"
        self.grace_period = 0.0
        self.presenters: list[Presenter] = []
        self.ui_url: str | None = None
        self.scope = SCOPE_CACHE
        self.fresh_sign_in = False
        self.current_run: RunLink | None = None
        self.ticker = Ticker()
        self._prompt_to: Presenter | None = None
        self._lock = threading.RLock()
        self._flow_thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._flow_done = threading.Event()
        self._flow_done.set()
        self._last_failure_at = 0.0
        self._remove_listener: Callable[[], None] | None = None
        self._saved_auth = os.environ.get("MLFLOW_TRACKING_AUTH")
        self._saved_default = peek_default_session()
        self._owned: list[AnySession] = []
        self._links = RunLinks(self.absolute_ui_url, self._on_run)

    # -- choosing the session --------------------------------------------------------------------------------

    def configure(
        self, settings: Settings, *, flow: str | None = None, grace_period: float | None = None, new: bool = False
    ) -> None:
        """Use `settings` with `flow` (None: the server's sign-in when this kernel has one, else device).

        `new`: a fresh sign-in for this kernel alone (memory only), whoever else is signed in. Under a Jupyter
        server with the broker, an explicit flow is this kernel's own sign-in too: it never shares (or revokes)
        the refresh token the server holds.
        """
        broker = broker_from_env()
        use_broker = broker is not None and not new and flow in (None, "browser") and _same_provider(settings)
        self.flow = "server" if use_broker else (flow or "device")
        self.fresh_sign_in = new
        if grace_period is not None:
            self.grace_period = max(0.0, grace_period)
        current = self.session
        if use_broker:
            assert broker is not None
            login_path, ui_path = server_paths(broker[0])
            self.ui_url = ui_path
            if isinstance(current, BrokerSession) and current.url == broker[0]:
                shared = current
            else:
                shared = BrokerSession(settings, *broker)
                shared.login_url = login_path
            shared.attach()
            session: AnySession = shared
            self.scope = SCOPE_SERVER
        else:
            self.ui_url = server_paths(broker[0])[1] if broker else None
            private = new or broker is not None
            self.scope = SCOPE_KERNEL if private else SCOPE_CACHE
            if (
                not new
                and isinstance(current, Session)
                and _same_session_settings(current.settings, settings)
                and (current.cache is None) == private
            ):
                session = current
            elif private:
                session = Session(settings, use_cache=False)  # this kernel's alone: nobody else can revoke it
                self._owned.append(session)
            else:
                existing = peek_default_session()
                if (
                    isinstance(existing, Session)
                    and existing.cache is not None
                    and _same_session_settings(existing.settings, settings)
                ):
                    session = existing
                else:
                    session = Session(settings)
                    self._owned.append(session)
        self._use(session)
        self._links.install()

    def scope_text(self) -> str:
        session = self.session
        cache = session.cache if isinstance(session, Session) else None
        return scope_text(self.scope, str(cache.directory) if cache is not None else None)

    def absolute_ui_url(self) -> str | None:
        """The MLflow UI as the user's browser reaches it (links printed in the notebook), when this server has it."""
        session = self.session
        if isinstance(session, BrokerSession) and session.ui_url:
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
            self._remove_listener = session.add_listener(self._on_snapshot)
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
        with self._lock:
            self.presenters.append(presenter)
        if self.session is not None:
            presenter.update(self.session.snapshot())

    def detach(self, presenter: Presenter) -> None:
        with self._lock:
            if presenter in self.presenters:
                self.presenters.remove(presenter)

    def _each(self, call: Callable[[Presenter], None]) -> None:
        with self._lock:
            presenters = list(self.presenters)
        for presenter in presenters:
            try:
                call(presenter)
            except Exception:
                logger.exception("Presenter %r failed", presenter)

    def tick(self) -> None:
        """Let text presenters print what they collected (they do so on the main thread only)."""
        self._each(lambda p: getattr(p, "drain", lambda: None)())

    def _on_snapshot(self, snapshot: SessionSnapshot) -> None:
        self._each(lambda p: p.update(snapshot))

    def _prompt(self, call: Callable[[Presenter], None]) -> None:
        """Prompts (a device code, a link) go to one presenter: the one that asked, else the newest."""
        with self._lock:
            target = self._prompt_to if self._prompt_to in self.presenters else None
            if target is None and self.presenters:
                target = self.presenters[-1]
        if target is not None:
            try:
                call(target)
            except Exception:
                logger.exception("Presenter %r failed", target)

    # -- signing in ------------------------------------------------------------------------------------------

    @property
    def signing_in(self) -> bool:
        return not self._flow_done.is_set()

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
        with self._lock:
            if self.signing_in:
                return
            self._prompt_to = presenter
            self._cancel = threading.Event()
            self._flow_done.clear()
            self._flow_thread = threading.Thread(target=self._run_flow, name="mlflow-oidc-sign-in", daemon=True)
            self._flow_thread.start()

    def wait(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> bool:
        """Block (the cell) until the sign-in ends; Ctrl-C / interrupt cancels it. True when signed in."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._flow_done.wait(0.2):
                if tick is not None:
                    tick()
                if deadline is not None and time.monotonic() > deadline:
                    break
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            if tick is not None:
                tick()
        return self.session is not None and self.session.signed_in

    def cancel(self) -> None:
        self._cancel.set()
        thread = self._flow_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run_flow(self) -> None:
        session = self.session
        try:
            assert session is not None
            if isinstance(session, BrokerSession):
                self._server_sign_in(session)
            elif self.flow == "client-credentials":
                session.login_client_credentials()
            elif self.flow == "browser":
                session.login_browser(
                    on_url=lambda url, _opened: self._prompt(
                        lambda p: p.link_prompt(url, "Sign in with your browser; this page then returns here.")
                    ),
                    open_browser=False,
                    timeout=SIGN_IN_TIMEOUT,
                    cancel=self._cancel,
                )
            else:
                session.login_device(
                    lambda device: self._prompt(lambda p: p.device_prompt(device)), cancel=self._cancel
                )
            self.fresh_sign_in = False  # done: a later %mlflow_login may reuse it
        except OIDCError as exc:
            self._last_failure_at = time.monotonic()
            message = str(exc)
            self._prompt(lambda p: p.failed(message))
        except Exception as exc:
            self._last_failure_at = time.monotonic()
            logger.exception("Sign-in crashed")
            self._prompt(lambda p, e=exc: p.failed(f"Sign-in failed unexpectedly ({type(e).__name__}: {e})."))  # type: ignore[misc]
        finally:
            self._flow_done.set()

    def _server_sign_in(self, session: BrokerSession) -> None:
        """Send the user to the Jupyter server's sign-in (same browser as JupyterLab), then ask until it is done."""
        if session.load_cached():
            return
        url = session.login_url or server_paths(session.url)[0]
        # Why the server has no session (under JupyterHub: the hub's reason, e.g. its provider setup) comes first.
        why = session.snapshot().message
        hint = "Sign in through this Jupyter server (used by the MLflow UI too)."
        self._prompt(lambda p: p.link_prompt(url, f"{why} {hint}" if why else hint))
        deadline = time.monotonic() + SIGN_IN_TIMEOUT
        while not self._cancel.wait(BROKER_POLL):
            if time.monotonic() > deadline:
                raise LoginRequired(f"No sign-in within {SIGN_IN_TIMEOUT / 60:.0f} min.")
            if session.load_cached():
                return
        raise LoginRequired("Sign-in was cancelled.")

    def login_required(self) -> None:
        """A grace waiter needs a sign-in: start one unless one runs or one just failed."""
        if self.signing_in or time.monotonic() - self._last_failure_at < RETRY_SIGN_IN_AFTER:
            return
        self.sign_in()

    # -- signing out and unloading ---------------------------------------------------------------------------

    def logout(self, *, server: bool = False) -> SignOut:
        """Sign out, and say whom it affected: this kernel, the Jupyter server (UI and its notebooks), the cache."""
        self.cancel()
        if server:
            return self._logout_server()
        session = self.session
        if session is None or (not session.signed_in and not isinstance(session, BrokerSession)):
            if isinstance(session, Session):
                session.logout()  # drops a leftover cache entry, if any
            return SignOut("This kernel is not signed in to MLflow; nothing to sign out.")
        who = session.identity
        if isinstance(session, BrokerSession):
            session.detach()
            server_who = session.server_identity
            kept = f" stay signed in{_as(server_who)}" if server_who else " are not affected"
            return SignOut(
                f"This kernel no longer uses the Jupyter server's MLflow sign-in{_as(who)}: its MLflow calls now "
                f"fail until %mlflow_login. The server, the MLflow UI and other notebooks{kept}; "
                "%mlflow_logout --server (or Sign out in the MLflow UI) signs them all out."
            )
        if self.scope == SCOPE_KERNEL:
            shared_grant = self._server_holds(who)
            # The provider may tie this kernel's tokens to the grant of the server's sign-in (same user, same
            # client): revoking them would end the server's too. Then they are only forgotten, never revoked.
            end_session_url = session.logout(revoke=not shared_grant)
            how = (
                "its tokens are forgotten (not revoked: the Jupyter server is signed in as the same user, and "
                "revoking would end that too)"
                if shared_grant
                else "its refresh token is revoked"
            )
            return SignOut(
                f"Signed out of MLflow in this kernel only{_as(who)}: {how}. The Jupyter server, the MLflow UI and "
                "other notebooks keep their sign-in.",
                None if shared_grant else end_session_url,
            )
        end_session_url = session.logout()
        return SignOut(
            f"Signed out of MLflow{_as(who)}: refresh token revoked, cached tokens deleted, for {self.scope_text()}.",
            end_session_url,
        )

    def _server_holds(self, who: Identity | None) -> bool:
        """Whether the Jupyter server is (or may be) signed in as `who`: then this kernel must not revoke."""
        broker = broker_from_env()
        if broker is None:
            return False
        state = server_state(*broker)
        if state is None:
            return True  # unknown: never risk the server's sign-in
        subject = (state.get("identity") or {}).get("subject") if state.get("signed_in") else None
        return subject is not None and who is not None and subject == who.subject

    def _logout_server(self) -> SignOut:
        broker = broker_from_env()
        if broker is None:
            raise OIDCError(
                "This kernel was not started by a Jupyter server with the MLflow sign-in: no server to sign out."
            )
        session = self.session
        target = session if isinstance(session, BrokerSession) else BrokerSession(_settings_of(session), *broker,
                                                                                 background_refresh=False)  # fmt: skip
        state = server_state(*broker) or {}
        who = Identity.from_dict(state["identity"]) if state.get("signed_in") and state.get("identity") else None
        target.sign_out_server()
        if target is not session:
            target.close()
        uses_it = isinstance(session, BrokerSession)
        message = (
            f"Signed the Jupyter server out of MLflow{_as(who)}: the MLflow UI and every notebook using its sign-in"
            + (", this one included," if uses_it else "")
            + " must sign in again. Notebooks signed in on their own (%mlflow_login --new) keep theirs."
        )
        if not uses_it and session is not None and session.signed_in:
            message += f" This kernel keeps its own sign-in{_as(session.identity)}; %mlflow_logout ends it."
        return SignOut(message)

    def close(self) -> None:
        """Stop every thread this kernel layer started and undo what it set (tokens stay in the cache)."""
        self.cancel()
        self._links.uninstall()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        for presenter in list(self.presenters):
            presenter.close()
        self.presenters.clear()
        self.ticker.close()
        for session in {id(s): s for s in [*self._owned, self.session] if s is not None}.values():
            session.close()
        self._owned.clear()
        self.session = None
        set_default_session(self._saved_default)
        if self._saved_auth is None:
            os.environ.pop("MLFLOW_TRACKING_AUTH", None)
        else:
            os.environ["MLFLOW_TRACKING_AUTH"] = self._saved_auth


class GraceSession:
    """The kernel's session as MLflow sees it when a grace period is on: on LoginRequired, wait for a sign-in.

    The waiter asks the kernel login to start a new sign-in (shown in the widget), then retries the call once
    the session is signed in again, so a long run loses no metric to an expired session.
    """

    def __init__(self, inner: AnySession, login: KernelLogin) -> None:
        self.inner = inner
        self.login = login

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<GraceSession {self.login.grace_period:.0f} s {self.inner!r}>"

    @property
    def settings(self) -> Settings:
        return self.inner.settings

    @property
    def identity(self) -> Identity | None:
        return self.inner.identity

    @property
    def signed_in(self) -> bool:
        return self.inner.signed_in

    def snapshot(self) -> SessionSnapshot:
        return self.inner.snapshot()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        return self.inner.add_listener(listener)

    def access_token(self) -> str:
        return self._with_grace(self.inner.access_token)

    def token_rejected(self, token: str) -> str:
        return self._with_grace(lambda: self.inner.token_rejected(token))

    def _with_grace(self, call: Callable[[], str]) -> str:
        try:
            return call()
        except LoginRequired as first:
            if not self._wait_for_sign_in():
                raise first from None
        return self.inner.access_token()

    def _wait_for_sign_in(self) -> bool:
        signed_in = threading.Event()
        remove = self.inner.add_listener(lambda s: signed_in.set() if s.signed_in else None)
        try:
            deadline = time.monotonic() + self.login.grace_period
            logger.warning("MLflow is waiting up to %.0f s for you to sign in again", self.login.grace_period)
            while not self.inner.signed_in:
                self.login.login_required()
                self.login.tick()
                if signed_in.wait(1.0):
                    break
                if time.monotonic() > deadline or self.login.session is not self.inner:
                    return False
            return True
        finally:
            remove()


def _as(identity: Identity | None) -> str:
    return f" (as {identity.username})" if identity else ""


def _settings_of(session: AnySession | None) -> Settings:
    return session.settings if session is not None else Settings.load()


def _same_provider(settings: Settings) -> bool:
    """The server's session serves only kernels that want its issuer and client."""
    env_issuer = os.environ.get("MLFLOW_OIDC_ISSUER", "").rstrip("/")
    env_client = os.environ.get("MLFLOW_OIDC_CLIENT_ID", "")
    return (not env_issuer or env_issuer == settings.issuer) and (not env_client or env_client == settings.client_id)


def _same_session_settings(a: Settings, b: Settings) -> bool:
    keys = ("issuer", "client_id", "client_secret", "scopes", "audience", "resource", "tracking_uri", "cache_dir")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
