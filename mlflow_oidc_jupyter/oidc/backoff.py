"""The one retry pause after repeated failures (token refresh, broker renewal): doubling, capped at 30 s."""

from __future__ import annotations

#: Pause after the 1st, 2nd, ... failure in a row; the last one repeats.
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


def backoff_delay(failures: int, cap: float = BACKOFF[-1]) -> float:
    """Seconds to wait before the next attempt after `failures` failures in a row (0 when none failed); `cap`
    bounds the pause where a quick recovery matters more than sparing the other side (a restarting hub)."""
    if failures <= 0:
        return 0.0
    return min(cap, BACKOFF[min(failures, len(BACKOFF)) - 1])
