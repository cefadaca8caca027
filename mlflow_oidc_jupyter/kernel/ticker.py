"""One clock thread per kernel that keeps every live widget's countdowns current (none while no widget lives)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


class Ticker:
    """Calls each registered callback every `seconds` from a single thread; the thread ends with the last one."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def add(self, callback: Callable[[], object]) -> None:
        with self._lock:
            self._callbacks.append(callback)
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="mlflow-oidc-ticker",
                                                daemon=True)  # fmt: skip
                self._thread.start()

    def remove(self, callback: Callable[[], object]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
            if not self._callbacks:
                self._stop.set()

    def close(self) -> None:
        with self._lock:
            self._callbacks.clear()
            self._stop.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.seconds):
            with self._lock:
                callbacks = list(self._callbacks)
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # a closed widget or a gone comm must not stop the others' clock
                    logger.debug("Ticker callback %r failed", callback, exc_info=True)
                    self.remove(callback)
