"""`%mlflow_login`, `%mlflow_logout`, `%mlflow_whoami`: parse arguments, then hand over to the kernel login."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import HTML, display

from ..errors import ConfigError, OIDCError
from ..settings import Settings
from .login import FLOWS, KernelLogin
from .presenter import Presenter
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
        server's) is reused without a prompt. The cell waits until you signed in; interrupt the kernel to stop.
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
            self.login.configure(settings, flow=args.flow, grace_period=args.grace_period)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        presenter = make_presenter(self.login, text=args.text or not self._widgets())
        if not isinstance(presenter, TextPresenter):
            display(presenter)
        self.login.attach(presenter)
        tick = getattr(presenter, "drain", None)
        try:
            if self.login.resume():
                return
            self.login.sign_in()
            self.login.wait(timeout=args.timeout, tick=tick)
        finally:
            if tick is not None:
                tick()
            if isinstance(presenter, TextPresenter) and not self.login.grace_period:
                self.login.detach(presenter)  # nobody would print it after this cell

    @line_magic
    def mlflow_logout(self, line: str) -> None:
        """Sign out: revoke the refresh token, forget the cached tokens of this issuer and client."""
        try:
            done = self.login.logout()
        except OIDCError as exc:
            raise UsageError(str(exc)) from None
        if done is None:
            print("Not signed in.")
            return
        print(done.message)
        if done.url:
            if self._widgets():
                display(HTML(f'<a href="{escape(done.url)}" target="_blank">{escape(done.link_label)}</a>'))
            else:
                print(f"{done.text_hint}, open {done.url}")

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
            ui_url=self.login.ui_url,
            last_refresh_at=self.login.last_refresh_at,
            refreshed_by=self._refreshed_by(),
            now=time.time(),
        )
        print(render_view(view))

    # -- helpers ---------------------------------------------------------------------------------------------

    def _widgets(self) -> bool:
        """A kernel with a frontend shows widgets; terminal IPython does not."""
        return getattr(self.shell, "kernel", None) is not None

    def _refreshed_by(self) -> str:
        return refreshed_by(self.login)


def refreshed_by(login: KernelLogin) -> str:
    return login.source.refreshed_by if login.source is not None else "this kernel"


def make_presenter(login: KernelLogin, *, text: bool) -> Presenter:
    """The login widget, or the text presenter, wired to `login` (not yet attached or displayed)."""
    sources: dict[str, Any] = {
        "tracking_uri": lambda: login.session.settings.tracking_uri if login.session else None,
        "ui_url": lambda: login.ui_url,
        "last_refresh_at": lambda: login.last_refresh_at,
        "refreshed_by": lambda: refreshed_by(login),
    }
    if text:
        return TextPresenter(**sources)
    from .widget import LoginWidget

    return LoginWidget(on_sign_in=login.sign_in, on_sign_out=login.logout, on_cancel=login.cancel, **sources)
