"""Running a coroutine from a plain test, whatever loop the test process already runs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_coroutine(coroutine: Coroutine[Any, Any, T], timeout: float | None = 120.0) -> T:
    """`asyncio.run(coroutine)` in a thread of its own: in the whole suite a worker may already run a loop
    (Playwright's), and asyncio.run refuses to start inside one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=timeout)
