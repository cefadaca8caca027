"""The same sign-in as text, for IPython without widgets and `%mlflow_login --text`; prints on the main thread only."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from ..oidc.client import DeviceAuthorization
from ..oidc.session import SessionSnapshot, SessionState
from .view import SessionView, describe, duration


def render_view(view: SessionView) -> str:
    """The signed-in details (or the state) as aligned text lines."""
    lines = [view.title]
    rows = view.lines()
    width = max((len(k) for k, _ in rows), default=0)
    lines += [f"  {k + ':':<{width + 1}} {v}" for k, v in rows]
    if view.ui_url:
        lines.append(f"  {'MLflow UI:':<{width + 1}} {view.ui_url}")
    if view.message and view.user is None:
        lines.append(f"  {view.message}")
    return "\n".join(lines)


class TextPresenter:
    """Collects what happens (from any thread) and prints it when the main thread calls `drain()`."""

    def __init__(
        self,
        *,
        tracking_uri: Callable[[], str | None],
        ui_url: Callable[[], str | None],
        refreshed_by: Callable[[], str],
        scope: Callable[[], str] = lambda: "",
        write: Callable[[str], None] = print,
    ) -> None:
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._write = write
        self._tracking_uri, self._ui_url = tracking_uri, ui_url
        self._refreshed_by, self._scope = refreshed_by, scope
        self._last_state: SessionState | None = None

    def device_prompt(self, device: DeviceAuthorization) -> None:
        target = device.verification_uri_complete or device.verification_uri
        self._queue.put(
            f"To sign in to MLflow, open {target}\n"
            f"and check that it shows the code:  {device.user_code}\n"
            f"(the code expires in {duration(device.expires_at - time.time())}; waiting for approval…)"
        )

    def link_prompt(self, url: str, note: str) -> None:
        self._queue.put(f"To sign in to MLflow, open {url}\n({note} Waiting for sign-in…)")

    def update(self, snapshot: SessionSnapshot) -> None:
        # Only changes a person needs to read: signed in, refresh failing, login required, signed out.
        if snapshot.state in (SessionState.SIGNING_IN, SessionState.REFRESHING) or snapshot.state == self._last_state:
            return
        if self._last_state is None and snapshot.state == SessionState.SIGNED_OUT:
            self._last_state = snapshot.state
            return  # the prompt that follows says it
        self._last_state = snapshot.state
        self._queue.put(render_view(self.view(snapshot)))

    def view(self, snapshot: SessionSnapshot) -> SessionView:
        return describe(
            snapshot,
            tracking_uri=self._tracking_uri(),
            ui_url=self._ui_url(),
            refreshed_by=self._refreshed_by(),
            scope=self._scope(),
        )

    def failed(self, message: str) -> None:
        self._queue.put(f"Sign-in failed: {message}\nRun %mlflow_login to sign in again.")

    def drain(self) -> None:
        """Print what was collected; a no-op off the main thread (output would land in whatever cell runs)."""
        if threading.current_thread() is not threading.main_thread():
            return
        while True:
            try:
                self._write(self._queue.get_nowait())
            except queue.Empty:
                return

    def close(self) -> None:
        self.drain()
