"""Wait until a process we started answers over HTTP, or say why it did not (its exit, the tail of its log)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from .errors import StackError
from .processes import log_tail


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with, or None when nothing answers."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 (loopback URLs we built)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_healthy(
    name: str,
    url: str,
    *,
    running: Callable[[], bool],
    log_path: Path,
    timeout: float,
    expected: Collection[int] = (200,),
    headers: Mapping[str, str] | None = None,
    ready: Callable[[], bool] | None = None,
) -> float:
    """Poll `url` until it answers an `expected` status (and `ready()` holds); return the seconds it took.

    Raises StackError, with the last lines of `log_path`, when the process exits or the time is up.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not running():
            raise StackError(f"{name} exited during start. Last lines of {log_path}:\n{log_tail(log_path)}")
        if http_status(url, headers) in expected and (ready is None or ready()):
            return time.monotonic() - started
        time.sleep(0.1)
    raise StackError(
        f"{name} did not become healthy within {timeout:.0f} s ({url}). Last lines of {log_path}:\n{log_tail(log_path)}"
    )
