"""Change feed of the server session: a version that moves on every state change, and long polls that await it."""

from __future__ import annotations

import asyncio
import threading

from ..oidc.observable import ObservableSession, SessionSnapshot

#: Longest a client may hold a status request open waiting for a change (seconds).
MAX_WAIT = 30.0


class SessionFeed:
    """Pushes the session's changes to browsers and kernels that wait for them (one long poll each)."""

    def __init__(self, session: ObservableSession | None) -> None:
        self._lock = threading.Lock()
        self._version = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._remove = session.add_listener(self._changed) if session is not None else None

    @property
    def version(self) -> int:
        return self._version

    def _changed(self, _snapshot: SessionSnapshot) -> None:
        # Called from whichever thread changed the session: hand the wake-up to the event loop.
        with self._lock:
            self._version += 1
            loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, since: int, timeout: float) -> int:
        """The version once it differs from `since`, or after `timeout` seconds (capped at MAX_WAIT)."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
        if self._version != since or timeout <= 0:
            return self._version
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, min(timeout, MAX_WAIT))
        except asyncio.TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return self._version

    def close(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)
