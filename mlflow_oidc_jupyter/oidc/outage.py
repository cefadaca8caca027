"""Riding out an unreachable identity provider: when to ask it again, how long callers wait, what to tell them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .backoff import backoff_delay

#: The state people see (widget, `mlflow-oidc status`) while calls wait for the provider.
UNREACHABLE = "identity provider unreachable, retrying"
#: Once calls wait (the access token has expired), the provider is asked at least this often: a run resumes
#: within about this long after the provider is back.
WAITING_RETRY = 1.0
#: Past the patience (calls fail fast meanwhile), it is still asked at least this often.
GAVE_UP_RETRY = 5.0


def clock(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class Outage:
    """A streak of failed refreshes; empty (`since` None) while refreshes succeed."""

    patience: float
    failures: int = 0
    since: float | None = None
    retry_at: float = 0.0
    reason: str = ""

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, reason: str, expires_at: float, now: float | None = None) -> None:
        """Count a failed attempt and decide when to try again."""
        now = time.time() if now is None else now
        self.failures += 1
        self.since = self.since or now
        self.reason = reason
        delay = backoff_delay(self.failures)
        if now < self.deadline(expires_at):
            # Never later than the expiry while the token works; often once calls are waiting for a new one.
            delay = min(delay, max(WAITING_RETRY, expires_at - now))
        else:
            delay = min(delay, GAVE_UP_RETRY)
        self.retry_at = now + delay

    def ended(self, now: float | None = None) -> float | None:
        """The provider answered: how long the outage lasted (None if there was none)."""
        since, self.since, self.failures, self.retry_at, self.reason = self.since, None, 0, 0.0, ""
        return None if since is None else (time.time() if now is None else now) - since

    def deadline(self, expires_at: float) -> float:
        """Until when calls without a valid token wait: the patience, counted from expiry (or the outage's start)."""
        return max(expires_at, self.since or time.time()) + self.patience

    def waiting_message(self) -> str:
        since = clock(self.since) if self.since else clock(time.time())
        reason = f" {self.reason}" if self.reason else ""
        return f"{UNREACHABLE} (since {since}; calls wait up to {duration(self.patience)}).{reason}"

    def gave_up_message(self, issuer: str) -> str:
        since = clock(self.since) if self.since else "a while"
        return (
            f"The identity provider {issuer} has been unreachable since {since} and the access token has expired; "
            f"waited {duration(self.patience)} (MLFLOW_OIDC_PATIENCE). The session is kept and retried: "
            "try again once the provider is back."
        )
