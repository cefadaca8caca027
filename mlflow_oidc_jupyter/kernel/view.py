"""What the widget and the text presenter show, computed once from a session snapshot (never a token)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..oidc.outage import UNREACHABLE
from ..oidc.session import SessionSnapshot, SessionState


def duration(seconds: float | None) -> str:
    """A short human duration: '42 s', '4 min 05 s', '3 h 12 min', '2 d 4 h'; 'expired' when negative."""
    if seconds is None:
        return "unknown"
    if seconds <= 0:
        return "expired"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def clock(epoch: float | None) -> str:
    """Local wall-clock time of an event, e.g. '14:03:27'."""
    return time.strftime("%H:%M:%S", time.localtime(epoch)) if epoch else "never"


@dataclass(frozen=True)
class SessionView:
    """The lines a person reads about a session."""

    state: SessionState
    title: str
    user: str | None = None
    roles: str = ""
    access_expires_in: str = ""
    session_expires_in: str = ""
    auto_refresh: str = ""
    last_refresh: str = ""
    scope: str = ""
    tracking_uri: str | None = None
    ui_url: str | None = None
    message: str | None = None

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the signed-in details."""
        if self.user is None:
            return []
        rows = [
            ("User", self.user),
            ("Roles", self.roles or "none"),
            ("Access token expires in", self.access_expires_in),
            ("Session expires in", self.session_expires_in),
            ("Auto-refresh", self.auto_refresh),
            ("Last refresh", self.last_refresh),
        ]
        if self.scope:
            rows.append(("Sign-in of", self.scope))
        if self.tracking_uri:
            rows.append(("Tracking server", self.tracking_uri))
        return rows


TITLES = {
    SessionState.SIGNED_OUT: "Not signed in to MLflow",
    SessionState.SIGNING_IN: "Signing in to MLflow…",
    SessionState.LOGIN_REQUIRED: "Sign-in required",
}


def describe(
    snapshot: SessionSnapshot,
    *,
    tracking_uri: str | None,
    ui_url: str | None = None,
    refreshed_by: str = "this kernel",
    scope: str = "",
    now: float | None = None,
) -> SessionView:
    """The view of `snapshot` at time `now`."""
    now = time.time() if now is None else now
    identity = snapshot.identity
    if not snapshot.signed_in or identity is None:
        return SessionView(
            state=snapshot.state,
            title=TITLES.get(snapshot.state, "Not signed in to MLflow"),
            tracking_uri=tracking_uri,
            scope=scope,
            message=snapshot.message,
        )
    if snapshot.refresh_expires_at:
        session_left = duration(snapshot.refresh_expires_at - now) + " (renewed by each refresh)"
    else:
        session_left = "no limit announced by the identity provider"
    title = f"Signed in as {identity.username}"
    if snapshot.state == SessionState.REFRESH_FAILING:
        title += " — token refresh failing, retrying"
    elif snapshot.state == SessionState.PROVIDER_UNREACHABLE:
        title += f" — {UNREACHABLE}"
    return SessionView(
        state=snapshot.state,
        title=title,
        user=identity.username,
        roles=", ".join(identity.roles),
        access_expires_in=duration(snapshot.access_expires_at - now if snapshot.access_expires_at else None),
        session_expires_in=session_left,
        auto_refresh=f"on ({refreshed_by})",
        last_refresh=last_refresh(snapshot),
        scope=scope,
        tracking_uri=tracking_uri,
        ui_url=ui_url,
        message=snapshot.message,
    )


def plural(count: int, word: str, suffix: str = "s") -> str:
    """'1 refresh', '2 refreshes', '0 refreshes'."""
    return f"{count} {word}" if count == 1 else f"{count} {word}{suffix}"


def last_refresh(snapshot: SessionSnapshot) -> str:
    """When the current tokens were issued and how many refreshes preceded them."""
    if not snapshot.refresh_count:
        return f"none yet (tokens from {clock(snapshot.issued_at)})"
    return f"{clock(snapshot.issued_at)} ({plural(snapshot.refresh_count, 'refresh', 'es')})"
