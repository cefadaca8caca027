"""Processes we start: each leads its own group, is recognised again by PID and start time, and is stopped by group."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


def spawn(argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `argv` in a new session (so its whole group can be stopped), output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env), cwd=cwd, start_new_session=True,
        )  # fmt: skip


def start_time(pid: int) -> float | None:
    """When the process started (None when it is gone): with the PID, it tells a recycled PID from ours."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def record(pid: int) -> dict:
    """What we keep about a process we started, to recognise it later (JSON-friendly)."""
    return {"pid": pid, "started": start_time(pid)}


def _ours(entry: Mapping) -> psutil.Process | None:
    """The recorded process, also as a zombie, unless its PID now belongs to another process."""
    try:
        process = psutil.Process(entry["pid"])
        return process if process.create_time() == entry.get("started") else None
    except psutil.Error:
        return None


def alive(entry: Mapping) -> bool:
    """Whether the recorded process still runs (not a zombie, not a recycled PID)."""
    process = _ours(entry)
    try:
        return process is not None and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies (exited, not yet reaped) do not count."""
    try:
        os.waitpid(pgid, os.WNOHANG)  # reap the leader when it is our own child
    except ChildProcessError:
        pass
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def stop_group(entry: Mapping, graceful: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
    """End the group led by the recorded process: `graceful` first, SIGKILL if it lingers past `timeout`."""
    pid = entry["pid"]
    if _ours(entry) is None or not group_alive(pid):
        return
    try:
        os.killpg(pid, graceful)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while group_alive(pid):
        time.sleep(0.05)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
