"""The views of one kernel's sign-in (widget, text): each told every state change, one told each prompt."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from ..oidc.client import DeviceAuthorization
from ..oidc.observable import SessionSnapshot

logger = logging.getLogger(__name__)


class Presenter(Protocol):
    """What a view of the sign-in (widget or text) is told; it may be called from any thread."""

    def device_prompt(self, device: DeviceAuthorization) -> None: ...
    def link_prompt(self, url: str, note: str) -> None: ...
    def update(self, snapshot: SessionSnapshot) -> None: ...
    def failed(self, message: str) -> None: ...
    def close(self) -> None: ...


class Presenters:
    """The attached views; a failing view is logged and never stops the others (calls come from any thread)."""

    def __init__(self) -> None:
        self.all: list[Presenter] = []
        self.prompt_to: Presenter | None = None
        self._lock = threading.RLock()

    def attach(self, presenter: Presenter) -> None:
        with self._lock:
            self.all.append(presenter)

    def detach(self, presenter: Presenter) -> None:
        with self._lock:
            if presenter in self.all:
                self.all.remove(presenter)

    def each(self, call: Callable[[Presenter], None]) -> None:
        with self._lock:
            presenters = list(self.all)
        for presenter in presenters:
            self._call(call, presenter)

    def update(self, snapshot: SessionSnapshot) -> None:
        self.each(lambda p: p.update(snapshot))

    def tick(self) -> None:
        """Let text presenters print what they collected (they do so on the main thread only)."""
        self.each(lambda p: getattr(p, "drain", lambda: None)())

    def prompt(self, call: Callable[[Presenter], None]) -> None:
        """Prompts (a device code, a link) go to one presenter: the one that asked, else the newest."""
        with self._lock:
            target = self.prompt_to if self.prompt_to in self.all else None
            if target is None and self.all:
                target = self.all[-1]
        if target is not None:
            self._call(call, target)

    def close(self) -> None:
        with self._lock:
            presenters, self.all = list(self.all), []
        for presenter in presenters:
            presenter.close()

    @staticmethod
    def _call(call: Callable[[Presenter], None], presenter: Presenter) -> None:
        try:
            call(presenter)
        except Exception:
            logger.exception("Presenter %r failed", presenter)
