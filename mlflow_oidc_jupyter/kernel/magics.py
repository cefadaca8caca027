"""`%mlflow_login`, `%mlflow_logout`, `%mlflow_whoami`: parse arguments, then hand over to the kernel login."""

from __future__ import annotations

import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display

from ..broker_contract import LOGOUT_PATH
from ..errors import ConfigError, OIDCError
from ..settings import Settings
from .choice import FLOWS
from .login import KernelLogin
from .markup import link
from .presenters import Presenter
from .scope import SCOPE_CACHE, SCOPE_SERVER
from .text import TextPresenter, render_view
from .view import describe


@magics_class
class MLflowOIDCMagics(Magics):
    """Sign this kernel in to an MLflow tracking server behind OpenID Connect."""

    def __init__(self, shell: Any, login: KernelLogin) -> None:
        super().__init__(shell)
        self.login = login

    @magic_arguments()
    @argument("--issuer", help="OpenID Provider issuer URL (default: MLFLOW_OIDC_ISSUER or the config file).")
    @argument("--client-id", help="OAuth client id (default: MLFLOW_OIDC_CLIENT_ID or the config file).")
    @argument("--tracking-uri", help="MLflow tracking server behind the proxy (default: MLFLOW_TRACKING_URI).")
    @argument(
        "--flow",
        choices=FLOWS,
        help="How to sign in. Default: through the Jupyter server when it offers it, else the device flow "
        "(works on remote kernels too). `browser` uses the Jupyter server's sign-in page or a loopback redirect.",
    )
    @argument(
        "--new",
        action="store_true",
        help="A new sign-in for this kernel alone (e.g. as another user), kept in memory: the Jupyter server's "
        "sign-in, the MLflow UI, other notebooks and the token cache are not touched.",
    )
    @argument("--scopes", help="Scopes to request, space or comma separated (default: openid profile email).")
    @argument("--offline", action="store_true", help="Ask for offline_access: sessions past the IdP's maximum.")
    @argument("--text", action="store_true", help="Plain text instead of the widget.")
    @argument(
        "--grace-period",
        type=float,
        metavar="SECONDS",
        help="If the session ends during a run, MLflow calls wait this long for you to sign in again "
        "(shown in the widget) instead of raising LoginRequired. Default 0: raise at once.",
    )
    @argument("--timeout", type=float, metavar="SECONDS", help="Stop waiting for the sign-in after this long.")
    @line_magic
    def mlflow_login(self, line: str) -> None:
        """Sign in to MLflow; afterwards every MLflow call in this kernel is authenticated.

        A sign-in that still works (this kernel's, the token cache's from `mlflow-oidc login`, or the Jupyter
        server's) is reused without a prompt, and the output says which. `--new` always signs in anew, for this
        kernel only. The cell waits until you signed in; interrupt the kernel to stop.
        """
        args = parse_argstring(self.mlflow_login, line)
        scopes = args.scopes.replace(",", " ").split() if args.scopes else None
        try:
            if args.offline:
                scopes = [*(scopes or Settings.load().scopes), "offline_access"]
            settings = Settings.load(
                issuer=args.issuer,
                client_id=args.client_id,
                tracking_uri=args.tracking_uri,
                scopes=" ".join(scopes) if scopes else None,
            )
            self.login.configure(settings, flow=args.flow, grace_period=args.grace_period, new=args.new)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        presenter = make_presenter(self.login, text=args.text or not self._widgets())
        if not isinstance(presenter, TextPresenter):
            display(presenter)
        self.login.attach(presenter)
        tick = getattr(presenter, "drain", None)
        try:
            if self.login.resume():
                print(self._reused())
                return
            self.login.sign_in(presenter)
            self.login.wait(timeout=args.timeout, tick=tick)
        finally:
            if tick is not None:
                tick()
            if isinstance(presenter, TextPresenter) and not self.login.grace_period:
                self.login.detach(presenter)  # nobody would print it after this cell

    @magic_arguments()
    @argument(
        "--server",
        action="store_true",
        help="Sign the Jupyter server out of MLflow: the MLflow UI and every notebook using its sign-in.",
    )
    @line_magic
    def mlflow_logout(self, line: str) -> None:
        """Sign out; the output says whom it affected (this kernel, the Jupyter server and its notebooks, the cache).

        With the Jupyter server's sign-in, this kernel stops using it (its MLflow calls fail until %mlflow_login)
        and the server stays signed in; `--server` signs the server out. A kernel's own sign-in is revoked, unless
        the server holds a sign-in of the same user (revoking could end that too): then it is forgotten.
        """
        args = parse_argstring(self.mlflow_logout, line)
        try:
            result = self.login.logout(server=args.server)
        except OIDCError as exc:
            raise UsageError(str(exc)) from None
        print(result.message)
        session = self.login.session
        if session is not None and session.holder is not None and not args.server:
            if self._widgets() and self.login.ui_url:
                display(HTML(link(self.login.ui_url + LOGOUT_PATH, "Sign the Jupyter server out of MLflow")))
            return
        end_session_url = result.end_session_url
        if end_session_url:
            if self._widgets():
                display(HTML(link(end_session_url, "Also sign out at the identity provider")))
            else:
                print(f"To also end your session at the identity provider, open {end_session_url}")

    @line_magic
    def mlflow_whoami(self, line: str) -> None:
        """Who this kernel is signed in as: user, roles, expiries (never a token)."""
        session = self.login.session
        if session is None:
            print("Not signed in: run %mlflow_login.")
            return
        view = describe(
            session.snapshot(),
            tracking_uri=session.settings.tracking_uri,
            ui_url=self.login.absolute_ui_url() or self.login.ui_url,
            refreshed_by=self._refreshed_by(),
            scope=self.login.scope_text(),
            now=time.time(),
        )
        print(render_view(view))
        holder_identity = session.holder_identity
        if session.detached and holder_identity is not None:
            print(
                f"  The Jupyter server is signed in as {holder_identity.username}; "
                "%mlflow_login uses its sign-in again in this kernel."
            )

    # -- helpers ---------------------------------------------------------------------------------------------

    def _widgets(self) -> bool:
        """A kernel with a frontend shows widgets; terminal IPython does not."""
        return getattr(self.shell, "kernel", None) is not None

    def _refreshed_by(self) -> str:
        return refreshed_by(self.login)

    def _reused(self) -> str:
        """Says which existing sign-in `%mlflow_login` reused, and whom it serves."""
        session = self.login.session
        who = session.identity.username if session is not None and session.identity else "?"
        if self.login.scope == SCOPE_SERVER:
            source = "the Jupyter server's sign-in"
        elif self.login.scope == SCOPE_CACHE:
            source = "the cached sign-in (e.g. from `mlflow-oidc login` or another kernel)"
        else:
            source = "this kernel's sign-in"
        return (
            f"Reusing {source} of {who}: {self.login.scope_text()}. "
            "%mlflow_login --new signs this kernel in anew (e.g. as another user) without touching the others."
        )


def refreshed_by(login: KernelLogin) -> str:
    """Who keeps the session's tokens fresh, in the words the views show."""
    holder = login.session.holder if login.session is not None else None
    return f"by {holder}" if holder else "this kernel"


def make_presenter(login: KernelLogin, *, text: bool) -> Presenter:
    """The login widget, or the text presenter, wired to `login` (not yet attached or displayed)."""
    sources: dict[str, Any] = {
        "tracking_uri": lambda: login.session.settings.tracking_uri if login.session else None,
        "ui_url": lambda: login.ui_url,
        "refreshed_by": lambda: refreshed_by(login),
        "scope": login.scope_text,
    }
    if text:
        # Text is not a page: a link in it needs the origin (a widget's relative link resolves against its page).
        return TextPresenter(**{**sources, "ui_url": lambda: login.absolute_ui_url() or login.ui_url})
    from .widget import LoginWidget

    return LoginWidget(
        on_sign_in=login.sign_in,
        on_sign_out=login.logout,
        on_cancel=login.cancel,
        current_run=lambda: login.current_run,
        shared=lambda: login.scope == SCOPE_SERVER,
        ticker=login.ticker,
        **sources,
    )
