"""A session's listeners end on the state the session is in, however the threads that changed it interleave."""

from __future__ import annotations

import threading

from mlflow_oidc_jupyter.oidc.observable import ObservableSession, SessionSnapshot, SessionState

#: How long the overtaken thread waits to be overtaken. With the ordering right it cannot be (the other thread waits
#: for it), so this is how long the passing case takes; with the ordering wrong it is overtaken at once.
OVERTAKE_WINDOW = 1.0


class Overtaken(ObservableSession):
    """A session whose `slow` thread, once it has its snapshot, waits until another thread's change was told."""

    def __init__(self) -> None:
        super().__init__(background_refresh=False)
        self.slow: threading.Thread | None = None
        self.slow_has_snapshot = threading.Event()
        self.told_failed = threading.Event()

    def snapshot(self) -> SessionSnapshot:
        with self._lock:
            seen = SessionSnapshot(state=self._state, issuer="https://idp.example", client_id="jupyter")
        if threading.current_thread() is self.slow:
            self.slow_has_snapshot.set()
            self.told_failed.wait(OVERTAKE_WINDOW)
        return seen

    def _refresh_when_due(self) -> float | None:
        return None


def test_the_last_state_told_is_the_state_the_session_is_in():
    session = Overtaken()
    told: list[SessionState] = []

    def listener(snapshot: SessionSnapshot) -> None:
        told.append(snapshot.state)
        if snapshot.state == SessionState.LOGIN_REQUIRED:
            session.told_failed.set()

    session.add_listener(listener)
    # A refresh finishing in one thread (it reads the state "signed in" and is then overtaken) while another thread
    # finds the session ended: what every widget and status line shows must be the end, not the refresh.
    session.slow = threading.Thread(target=session._set_state, args=(SessionState.SIGNED_IN,))
    session.slow.start()
    try:
        assert session.slow_has_snapshot.wait(30), "the slow thread never told its change"
        session._set_state(SessionState.LOGIN_REQUIRED, "Your session has ended.")
    finally:
        session.slow.join(timeout=30)
    assert not session.slow.is_alive()

    assert session.state == SessionState.LOGIN_REQUIRED
    assert told[-1] == SessionState.LOGIN_REQUIRED, f"listeners were told {[s.value for s in told]}"
