"""Waiting on a condition (never on a fixed sleep): the machine may be busy, the condition says when we are done."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.05) -> None:
    """Return once `condition()` is true; fail the test, naming the condition, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {condition}")
        time.sleep(interval)
