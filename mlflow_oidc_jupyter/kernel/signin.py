"""A kernel's interactive sign-in: one flow at a time off the main thread, waited on by the cell, cancellable."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import LoginRequired, OIDCError
from ..oidc.default import AnySession
from ..oidc.session import Session
from .presenters import Presenters

logger = logging.getLogger(__name__)

#: How long an interactive sign-in may take before we give up (the device code usually expires earlier).
SIGN_IN_TIMEOUT = 900.0
#: While the server's broker says "signed out", ask again this often.
BROKER_POLL = 1.0

#: One sign-in: runs in the thread; returns when signed in, raises OIDCError otherwise; stops when cancelled.
Flow = Callable[[threading.Event], None]


class SignInThread:
    """Runs one flow at a time in a daemon thread; prompts and failures go to the presenters."""

    def __init__(self, presenters: Presenters) -> None:
        self.presenters = presenters
        self.last_failure_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def start(self, flow: Flow, on_success: Callable[[], None]) -> None:
        """Run `flow` in a background thread, then `on_success()` if it signed in (a no-op while one runs)."""
        with self._lock:
            if self.running:
                return
            self._cancel = threading.Event()
            self._done.clear()
            self._thread = threading.Thread(
                target=self._run, args=(flow, self._cancel, on_success), name="mlflow-oidc-sign-in", daemon=True
            )
            self._thread.start()

    def wait(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> None:
        """Block (the cell) until the sign-in ends or `timeout`; Ctrl-C / interrupt cancels it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not self._done.wait(0.2):
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

    def cancel(self) -> None:
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, flow: Flow, cancel: threading.Event, on_success: Callable[[], None]) -> None:
        try:
            flow(cancel)
            on_success()
        except OIDCError as exc:
            self.last_failure_at = time.monotonic()
            message = str(exc)
            self.presenters.prompt(lambda p: p.failed(message))
        except Exception as exc:
            self.last_failure_at = time.monotonic()
            logger.exception("Sign-in crashed")
            self.presenters.prompt(lambda p, e=exc: p.failed(f"Sign-in failed unexpectedly ({type(e).__name__}: {e})."))  # type: ignore[misc]
        finally:
            self._done.set()


def own_flow(session: Session, flow: str, presenters: Presenters) -> Flow:
    """This kernel's own sign-in with `flow` (device, browser or client credentials)."""

    def run(cancel: threading.Event) -> None:
        if flow == "client-credentials":
            session.login_client_credentials()
        elif flow == "browser":
            session.login_browser(
                on_url=lambda url, _opened: presenters.prompt(
                    lambda p: p.link_prompt(url, "Sign in with your browser; this page then returns here.")
                ),
                open_browser=False,
                timeout=SIGN_IN_TIMEOUT,
                cancel=cancel,
            )
        else:
            session.login_device(lambda device: presenters.prompt(lambda p: p.device_prompt(device)), cancel=cancel)

    return run


def holder_flow(session: AnySession, presenters: Presenters) -> Flow:
    """Send the user to the holder's sign-in (the Jupyter server's, in the browser that shows JupyterLab), then ask
    until it is done."""

    def run(cancel: threading.Event) -> None:
        if session.load_cached():
            return
        # Why the server has no session (under JupyterHub: the hub's reason, e.g. its provider setup) comes first.
        why = session.snapshot().message
        hint = "Sign in through this Jupyter server (used by the MLflow UI too)."
        url = session.login_url or ""
        presenters.prompt(lambda p: p.link_prompt(url, f"{why} {hint}" if why else hint))
        deadline = time.monotonic() + SIGN_IN_TIMEOUT
        while not cancel.wait(BROKER_POLL):
            if time.monotonic() > deadline:
                raise LoginRequired(f"No sign-in within {SIGN_IN_TIMEOUT / 60:.0f} min.")
            if session.load_cached():
                return
        raise LoginRequired("Sign-in was cancelled.")

    return run
