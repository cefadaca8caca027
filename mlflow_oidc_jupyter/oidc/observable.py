"""A session as others see it: its state and reason, listeners told of changes, a thread that keeps it alive."""

from __future__ import annotations

import abc
import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import OIDCError
from .tokens import Identity

if TYPE_CHECKING:
    from .cache import TokenCache

logger = logging.getLogger(__name__)


class SessionState(str, enum.Enum):
    SIGNED_OUT = "signed_out"
    SIGNING_IN = "signing_in"
    SIGNED_IN = "signed_in"
    REFRESHING = "refreshing"
    REFRESH_FAILING = "refresh_failing"
    #: The access token has expired and the provider does not answer: calls wait (up to the patience).
    PROVIDER_UNREACHABLE = "provider_unreachable"
    LOGIN_REQUIRED = "login_required"


@dataclass(frozen=True)
class SessionSnapshot:
    """What listeners see: state, identity and expiries; never a token."""

    state: SessionState
    issuer: str
    client_id: str
    identity: Identity | None = None
    access_expires_at: float | None = None
    refresh_expires_at: float | None = None
    refresh_count: int = 0
    message: str | None = None
    #: When the current tokens were issued (the sign-in or the last refresh), epoch seconds.
    issued_at: float | None = None

    @property
    def signed_in(self) -> bool:
        return self.state in (
            SessionState.SIGNED_IN,
            SessionState.REFRESHING,
            SessionState.REFRESH_FAILING,
            SessionState.PROVIDER_UNREACHABLE,
        )


Listener = Callable[[SessionSnapshot], None]


class ObservableSession(abc.ABC):
    """State and reason changed together under `_lock`; listeners told in order, outside it; a refresher thread.

    A subclass says what its snapshot holds and what one round of its refresher does.
    """

    #: The refresher thread's name, as seen in thread dumps.
    _refresher_name = "session-refresher"

    # Who holds the tokens, as code showing the session asks (`default.AnySession`): here, this process.
    #: Who else holds and refreshes the tokens, in words ("the Jupyter server"); None: this process does.
    holder: str | None = None
    #: Where that holder answers (None: no holder).
    holder_url: str | None = None
    #: Where to sign in at the holder (a path on the origin the browser uses), when it said.
    login_url: str | None = None
    #: The MLflow UI as the holder's users reach it, when it said (links printed for them).
    ui_url: str | None = None
    #: The token cache this session shares with other processes (None: memory only).
    cache: TokenCache | None = None

    def __init__(self, *, background_refresh: bool = True) -> None:
        self.background_refresh = background_refresh
        self._lock = threading.RLock()
        self._notify_lock = threading.Lock()
        self._state = SessionState.SIGNED_OUT
        self._message: str | None = None
        self._listeners: list[Listener] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- observing -------------------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def signed_in(self) -> bool:
        return self.snapshot().signed_in

    @property
    def holder_identity(self) -> Identity | None:
        """Who the holder is signed in as, whether or not this process uses its session (None: no holder)."""
        return None

    @property
    def detached(self) -> bool:
        """True after this process stopped using the holder's session (until `attach()`)."""
        return False

    def attach(self) -> None:
        """Use the holder's session again after a sign-out here; nothing to do without a holder."""
        return None

    def sign_out_holder(self) -> None:
        """Sign the holder out, for everyone using its session."""
        raise OIDCError("This session's tokens are held here: there is no other party to sign out.")

    @abc.abstractmethod
    def snapshot(self) -> SessionSnapshot: ...

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(snapshot)` on every state change (from whichever thread made it); returns a remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def _set_state(self, state: SessionState, message: str | None = None) -> None:
        with self._lock:
            self._state, self._message = state, message
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        with self._notify_lock:
            # The snapshot is taken inside the lock: taken before it, a thread overtaken between the two could tell
            # the listeners a state older than one they were already told (a widget showing "signed in" after its
            # session had ended). Every _notify comes after its change, so the last one told is the state now.
            snapshot = self.snapshot()
            for listener in listeners:
                try:
                    listener(snapshot)
                except Exception:
                    logger.exception("Session listener %r failed", listener)

    # -- background refresh ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background refresher (the tokens stay where they are)."""
        self._stop.set()
        self._wake.set()
        thread = self._refresher
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _start_refresher(self) -> None:
        if not self.background_refresh:
            return
        with self._lock:
            self._wake.set()
            if self._refresher is not None and self._refresher.is_alive():
                return
            self._stop.clear()
            self._refresher = threading.Thread(target=self._refresh_loop, name=self._refresher_name, daemon=True)
            self._refresher.start()

    def _refresh_loop(self) -> None:
        """Keep an idle session alive; wakes on sign-in, refresh and stop."""
        while not self._stop.is_set():
            self._wake.clear()
            pause = self._refresh_when_due()
            if pause is None or pause > 0:
                self._wake.wait(pause)

    @abc.abstractmethod
    def _refresh_when_due(self) -> float | None:
        """One round of the refresher: renew if due; returns how long to wait (0: look again now, None: until woken)."""
