"""Server-side sign-in: `oauth/login` → identity provider (auth code + PKCE) → `oauth/callback`; `oauth/logout`."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from tornado import web

from ..errors import OIDCError
from ..oidc.client import PendingAuthorization
from . import pages
from .handlers import MLflowHandler, is_navigation

#: How long a started sign-in may take at the identity provider.
PENDING_TTL = 600.0
#: Sign-ins started and not finished that we remember (abandoned tabs, double clicks).
MAX_PENDING = 16
#: Binds the callback to the browser that started the sign-in (login CSRF).
SIGNIN_COOKIE = "mlflow-oidc-signin"


@dataclass(frozen=True)
class _Started:
    pending: PendingAuthorization
    next_path: str
    at: float


class PendingSignIns:
    """Sign-ins between redirect and callback, by state; kept in memory (they are worthless after a restart)."""

    def __init__(self) -> None:
        self._by_state: dict[str, _Started] = {}

    def add(self, pending: PendingAuthorization, next_path: str) -> None:
        now = time.monotonic()
        self._by_state = {s: v for s, v in self._by_state.items() if now - v.at < PENDING_TTL}
        while len(self._by_state) >= MAX_PENDING:
            self._by_state.pop(next(iter(self._by_state)))
        self._by_state[pending.state] = _Started(pending, next_path, now)

    def pop(self, state: str) -> _Started | None:
        started = self._by_state.pop(state, None)
        if started is None or time.monotonic() - started.at >= PENDING_TTL:
            return None
        return started


def safe_next(ext: Any, value: str | None) -> str:
    """Only paths on this server under its base_url: never another origin (open redirect)."""
    home = ext.ui_path
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return home
    if any(ord(c) < 0x20 for c in value) or not value.startswith(ext.serverapp.base_url):
        return home
    return value


class _SignInHandler(MLflowHandler):
    pages_only = True

    def origin(self) -> str:
        return f"{self.request.protocol}://{self.request.host}"

    def callback_uri(self) -> str:
        return self.origin() + self.ext.public_path("oauth", "callback")


class LoginHandler(_SignInHandler):
    """Start auth code + PKCE (state, nonce, S256) and send the browser to the identity provider."""

    @web.authenticated
    async def get(self) -> None:
        session = self.require_configured()
        if session is None:
            return
        next_path = safe_next(self.ext, self.get_argument("next", None))
        if self.ext.hub is not None:
            # Under JupyterHub people sign in at the hub, which holds their tokens; never a second client here.
            self.redirect(next_path if session.identity is not None else self.ext.hub_path("login", next_path))
            return
        if self.get_argument("reuse", "") and session.identity is not None:
            # The launcher's way in: signed in already, so straight to the page; else straight to the provider.
            self.redirect(next_path)
            return
        try:
            pending = await asyncio.to_thread(session.start_login, self.callback_uri())
        except OIDCError as exc:
            self.answer(
                502, pages.signin_failed(str(exc), self.login_url(next_path)), code="SIGN_IN_FAILED", message=str(exc)
            )
            return
        self.ext.pending.add(pending, next_path)
        self.set_signed_cookie(
            SIGNIN_COOKIE,
            pending.state,
            expires_days=None,
            path=self.ext.public_path("oauth") + "/",
            httponly=True,
            samesite="Lax",  # the provider's redirect back is a cross-site top-level GET
            secure=self.request.protocol == "https",
        )
        self.set_header("Cache-Control", "no-store")
        self.redirect(pending.url)


class CallbackHandler(_SignInHandler):
    """The provider's redirect back: check it belongs to this browser's sign-in, exchange the code, go on."""

    @web.authenticated
    async def get(self) -> None:
        session = self.require_configured()
        if session is None:
            return
        if self.ext.hub is not None:
            raise web.HTTPError(404, "Under JupyterHub, sign-in is at the hub.")
        state = self.get_argument("state", "")
        cookie = self.get_signed_cookie(SIGNIN_COOKIE, max_age_days=1)
        started = self.ext.pending.pop(state) if state else None
        self.clear_cookie(SIGNIN_COOKIE, path=self.ext.public_path("oauth") + "/")
        if started is None or cookie is None or not hmac.compare_digest(cookie.decode(), state):
            self.answer(
                400,
                pages.signin_failed(
                    "This sign-in is unknown or expired (or was started in another browser).", self.login_url()
                ),
                code="SIGN_IN_FAILED",
                message="unknown or expired sign-in",
            )
            return
        callback_url = f"{started.pending.redirect_uri}?{self.request.query}"
        try:
            identity = await asyncio.to_thread(session.finish_login, started.pending, callback_url)
        except OIDCError as exc:
            self.answer(
                400,
                pages.signin_failed(str(exc), self.login_url(started.next_path)),
                code="SIGN_IN_FAILED",
                message=str(exc),
            )
            return
        self.log.info("MLflow UI: signed in as %s", identity.username)
        self.remember_browser()
        self.set_header("Cache-Control", "no-store")
        self.redirect(started.next_path)


class LogoutHandler(_SignInHandler):
    """GET asks (a link from another site must not sign you out); POST signs out, also at the provider."""

    @web.authenticated
    def get(self) -> None:
        session = self.require_configured()
        if session is None:
            return
        self.set_header("Cache-Control", "no-store")
        if session.identity is None:
            self.finish(pages.signed_out_done(self.login_url(self.ext.ui_path)))
            return
        who = session.identity.username if session.identity else "you"
        self.finish(pages.confirm_logout(who, self.request.uri or "", self.xsrf_form_html()))

    @web.authenticated
    async def post(self) -> None:
        session = self.require_configured()
        if session is None:
            return
        if self.ext.hub is not None:
            session.logout()
            self.redirect(self.ext.hub_path("logout"))  # the hub ends the session for the UI and every kernel
            return
        back = self.ext.post_logout_redirect_uri or self.origin() + self.ext.public_path("oauth", "logout")
        try:
            end_session_url = await asyncio.to_thread(session.logout, post_logout_redirect_uri=back)
        except OIDCError as exc:
            self.log.warning("MLflow UI: sign-out at the provider failed: %s", exc)
            end_session_url = None
        self.log.info("MLflow UI: signed out")
        if not is_navigation(self.request) and "application/json" in self.request.headers.get("Accept", ""):
            # JupyterLab's sign-out command: it offers the provider's sign-out itself (a click opens it).
            self.set_header("Cache-Control", "no-store")
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"signed_out": True, "end_session_url": end_session_url}))
            return
        self.redirect(end_session_url or back)


class StatusHandler(_SignInHandler):
    """Who is signed in (never a token): JSON for JupyterLab, the UI overlay and scripts, a small page for people.

    `?since=<version>&wait=<seconds>` is a long poll: the answer comes when the session changed from that version
    (or after the wait), so browsers show sign-ins, sign-outs and ended sessions as they happen.
    """

    @web.authenticated
    async def get(self) -> None:
        self.remember_browser()
        since = self.get_argument("since", None)
        if since is not None:
            try:
                await self.ext.feed.wait(int(since), float(self.get_argument("wait", "0")))
            except ValueError:
                raise web.HTTPError(400, "since and wait must be numbers") from None
        session = self.ext.session
        snapshot = session.snapshot() if session is not None else None
        # Holding tokens is what counts: an abandoned second sign-in leaves the state "signing_in", tokens valid.
        identity = session.identity if session is not None else None
        self.set_header("Cache-Control", "no-store")
        if is_navigation(self.request):
            if identity is None:
                self.finish(pages.signed_out(self.login_url(self.request.path)))
            else:
                self.finish(pages.signed_in(identity.username, self.ext.ui_path))
            return
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(status_body(self.ext, snapshot, identity, self.login_url())))


def status_body(ext: Any, snapshot: Any, identity: Any, login_url: str) -> dict[str, Any]:
    """The status as JSON: state, user, roles, expiries, and the change version to wait on."""
    signed_in = identity is not None
    state = snapshot.state.value if snapshot else None
    if signed_in and state in ("signed_out", "signing_in"):
        state = "signed_in"  # a second sign-in was started and abandoned: the tokens still serve
    return {
        "configured": ext.session is not None,
        "signed_in": signed_in,
        "username": identity.username if identity else None,
        "roles": list(identity.roles) if identity else [],
        "state": state,
        "message": snapshot.message if snapshot else ext.config_problem,
        "access_expires_at": snapshot.access_expires_at if snapshot and signed_in else None,
        "session_expires_at": snapshot.refresh_expires_at if snapshot and signed_in else None,
        "version": ext.feed.version,
        "now": time.time(),
        "login_url": login_url,
        "logout_url": ext.public_path("oauth", "logout"),
        "ui_url": ext.ui_path,
    }
