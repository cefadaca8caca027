"""The kernel's session as MLflow sees it with a grace period: a call that needs a sign-in waits for one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import LoginRequired
from ..oidc.default import AnySession
from ..oidc.observable import Listener, SessionSnapshot
from ..oidc.tokens import Identity
from ..settings import Settings

if TYPE_CHECKING:
    from .login import KernelLogin

logger = logging.getLogger(__name__)


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
