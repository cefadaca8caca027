"""Waiting on a condition (never on a fixed sleep): the machine may be busy, the condition says when we are done."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, what: str = "", interval: float = 0.05) -> Any:
    """Return `condition()`'s first truthy value; fail the test, naming `what` (or the condition), after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or condition}")
        time.sleep(interval)
