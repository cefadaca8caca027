"""The kernel's interactive sign-in thread: one at a time, cancellable, awaited by the cell that started it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import OIDCError

logger = logging.getLogger(__name__)


class SignInThread:
    """Runs `run(cancel)` in a background thread; `on_done(None)` after success, `on_done(message)` after failure."""

    def __init__(self, on_done: Callable[[str | None], None]) -> None:
        self._on_done = on_done
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self.last_failure_at = 0.0

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def start(self, run: Callable[[threading.Event], None]) -> None:
        """Start `run` unless a sign-in runs already."""
        with self._lock:
            if self.running:
                return
            self._cancel = threading.Event()
            self._done.clear()
            self._thread = threading.Thread(target=self._run, args=(run, self._cancel), name="mlflow-oidc-sign-in",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def _run(self, run: Callable[[threading.Event], None], cancel: threading.Event) -> None:
        try:
            run(cancel)
            self._on_done(None)
        except OIDCError as exc:
            self.last_failure_at = time.monotonic()
            self._on_done(str(exc))
        except Exception as exc:
            self.last_failure_at = time.monotonic()
            logger.exception("Sign-in crashed")
            self._on_done(f"Sign-in failed unexpectedly ({type(exc).__name__}: {exc}).")
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None, tick: Callable[[], None] | None = None) -> None:
        """Block until the sign-in ends or `timeout` passes, calling `tick` meanwhile; Ctrl-C cancels it."""
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
        """Ask the running sign-in to stop and wait a moment for it."""
        self._cancel.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
