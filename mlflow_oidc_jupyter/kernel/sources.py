"""Where a kernel's tokens come from, behind one interface: its own sign-in, or its Jupyter server's (the broker)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from ..errors import LoginRequired
from ..oidc.session import Session
from ..settings import Settings
from .broker import BrokerSession
from .presenter import Presenters

#: How long an interactive sign-in may take before we give up (the device code usually expires earlier).
SIGN_IN_TIMEOUT = 900.0
#: While the server's broker says "signed out", ask again this often.
BROKER_POLL = 1.0

KernelSession = Session | BrokerSession


@dataclass(frozen=True)
class SignOut:
    """What signing out did, for the user: a sentence, and where to go to finish (e.g. the provider's sign-out)."""

    message: str
    url: str | None = None
    #: The link's label (widget) and the sentence before the URL (text).
    link_label: str = ""
    text_hint: str = ""


class TokenSource(Protocol):
    """One way for a kernel to be signed in: its session, how to sign in and out, who refreshes."""

    @property
    def session(self) -> KernelSession: ...

    #: Shown next to the last refresh ("this kernel", "by the Jupyter server").
    refreshed_by: str
    #: The flow's name as `%mlflow_login --flow` knows it, or "server".
    flow: str

    def sign_in(self, presenters: Presenters, cancel: threading.Event) -> None:
        """Run the interactive sign-in (in a background thread); raises OIDCError when it fails."""

    def sign_out(self) -> SignOut: ...


class OwnSignIn:
    """The kernel signs in itself (device, browser or client credentials) and refreshes its own tokens."""

    refreshed_by = "this kernel"

    def __init__(self, session: Session, flow: str) -> None:
        self._session = session
        self.flow = flow

    @property
    def session(self) -> Session:
        return self._session

    def sign_in(self, presenters: Presenters, cancel: threading.Event) -> None:
        if self.flow == "client-credentials":
            self._session.login_client_credentials()
        elif self.flow == "browser":
            self._session.login_browser(
                on_url=lambda url, _opened: presenters.link_prompt(
                    url, "Sign in with your browser; this page then returns here."
                ),
                open_browser=False,
                timeout=SIGN_IN_TIMEOUT,
                cancel=cancel,
            )
        else:
            self._session.login_device(presenters.device_prompt, cancel=cancel)

    def sign_out(self) -> SignOut:
        end_session_url = self._session.logout()
        return SignOut(
            "Signed out of MLflow.",
            end_session_url,
            link_label="Also sign out at the identity provider",
            text_hint="To also end your session at the identity provider",
        )


class ServerSignIn:
    """The kernel uses its Jupyter server's sign-in (same browser as JupyterLab); only the server refreshes."""

    refreshed_by = "by the Jupyter server"
    flow = "server"

    def __init__(self, session: BrokerSession) -> None:
        self._session = session

    @property
    def session(self) -> BrokerSession:
        return self._session

    def sign_in(self, presenters: Presenters, cancel: threading.Event) -> None:
        """Send the user to the server's sign-in page, then ask the broker until the server is signed in."""
        session = self._session
        if session.load_cached():
            return
        url = session.login_url or session.address.login_path
        # Why the server has no session (under JupyterHub: the hub's reason, e.g. its provider setup) comes first.
        why = session.snapshot().message
        hint = "Sign in through this Jupyter server (used by the MLflow UI too)."
        presenters.link_prompt(url, f"{why} {hint}" if why else hint)
        deadline = time.monotonic() + SIGN_IN_TIMEOUT
        while not cancel.wait(BROKER_POLL):
            if time.monotonic() > deadline:
                raise LoginRequired(f"No sign-in within {SIGN_IN_TIMEOUT / 60:.0f} min.")
            if session.load_cached():
                return
        raise LoginRequired("Sign-in was cancelled.")

    def sign_out(self) -> SignOut:
        self._session.forget()
        return SignOut(
            "This kernel no longer uses the Jupyter server's MLflow sign-in; the server stays signed in.",
            self._session.address.ui_path + "oauth/logout",
            link_label="Sign the Jupyter server out of MLflow",
            text_hint="To sign the Jupyter server out too",
        )


def same_session_settings(a: Settings, b: Settings) -> bool:
    """Whether a session made for `a` serves `b` as well (same provider, client, scopes, server and cache)."""
    keys = ("issuer", "client_id", "client_secret", "scopes", "audience", "resource", "tracking_uri", "cache_dir")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
