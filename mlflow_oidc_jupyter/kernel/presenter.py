"""What a view of the sign-in (widget or text) is told, and the fan-out to every view attached to a kernel."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from ..oidc.client import DeviceAuthorization
from ..oidc.observable import SessionSnapshot

logger = logging.getLogger(__name__)


class Presenter(Protocol):
    """A view of the sign-in; it may be called from any thread."""

    def device_prompt(self, device: DeviceAuthorization) -> None: ...
    def link_prompt(self, url: str, note: str) -> None: ...
    def update(self, snapshot: SessionSnapshot) -> None: ...
    def failed(self, message: str) -> None: ...
    def close(self) -> None: ...


class Presenters:
    """The views attached to one kernel's sign-in; a failing view never stops the others or the sign-in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Presenter] = []

    def __iter__(self) -> Iterator[Presenter]:
        with self._lock:
            return iter(list(self._items))

    def add(self, presenter: Presenter) -> None:
        with self._lock:
            self._items.append(presenter)

    def remove(self, presenter: Presenter) -> None:
        with self._lock:
            if presenter in self._items:
                self._items.remove(presenter)

    def each(self, call: Callable[[Presenter], None]) -> None:
        """Call `call(presenter)` for every view, logging (not raising) what a view does wrong."""
        for presenter in self:
            try:
                call(presenter)
            except Exception:
                logger.exception("Presenter %r failed", presenter)

    def device_prompt(self, device: DeviceAuthorization) -> None:
        self.each(lambda p: p.device_prompt(device))

    def link_prompt(self, url: str, note: str) -> None:
        self.each(lambda p: p.link_prompt(url, note))

    def failed(self, message: str) -> None:
        self.each(lambda p: p.failed(message))

    def tick(self) -> None:
        """Let text presenters print what they collected (they do so on the main thread only)."""
        self.each(lambda p: getattr(p, "drain", lambda: None)())

    def close(self) -> None:
        """Close every view and forget them."""
        with self._lock:
            items, self._items = self._items, []
        for presenter in items:
            presenter.close()
