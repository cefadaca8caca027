"""Wait until a process we started answers over HTTP, or say why it did not (its exit, the tail of its log)."""

from __future__ import annotations

import http.client
import socket
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


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._socket_path)


def unix_http_get(socket_path: Path, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `path` from an HTTP server on a Unix socket (MLflow in the local stack, as nginx reaches it)."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def unix_http_status(socket_path: Path, path: str, timeout: float = 2.0) -> int | None:
    """The status `path` answers with on a Unix socket, or None when nothing answers."""
    try:
        return unix_http_get(socket_path, path, timeout)[0]
    except (OSError, http.client.HTTPException):
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
    probe: Callable[[], int | None] | None = None,
) -> float:
    """Poll `url` (or `probe()`) until it answers an `expected` status (and `ready()` holds); return the seconds.

    Raises StackError, with the last lines of `log_path`, when the process exits or the time is up.
    """
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        if not running():
            raise StackError(f"{name} exited during start. Last lines of {log_path}:\n{log_tail(log_path)}")
        status = probe() if probe is not None else http_status(url, headers)
        if status in expected and (ready is None or ready()):
            return time.monotonic() - started
        time.sleep(0.1)
    raise StackError(
        f"{name} did not become healthy within {timeout:.0f} s ({url}). Last lines of {log_path}:\n{log_tail(log_path)}"
    )
