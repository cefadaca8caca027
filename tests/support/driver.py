"""The Playwright driver (node) at the end of a session: bounded teardown, and why it would not exit if it does not.

Playwright's sync API closes the driver's stdin and then waits, without a timeout, for the driver to exit. A driver
that does not exit hung the whole suite until pytest-timeout fired. Here the teardown watches the driver by PID: if
it is still alive after a bounded wait, we read why from /proc (its state, where it sleeps, who still holds the
write end of its stdin pipe), report that loudly, and end it by its PID so the session finishes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

#: A driver with no browser left exits within a second of its stdin closing; its own fallback exit is at 30 s.
EXIT_WAIT = 40.0


def driver_children_of(pid: int, before: set[int]) -> list[int]:
    """The Playwright driver processes (`... run-driver`) started by `pid` since `before` (its children then)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if child.pid not in before and "run-driver" in child.cmdline():
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError as exc:
        return f"<{exc.strerror}>"


def _alive(pid: int) -> bool:
    """Alive and not a zombie; never reaps (asyncio's child watcher waits on the driver and must get its status)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pipe_holders(inode: str) -> list[str]:
    """Every process with an fd on `inode` (e.g. "pipe:[123]"), its access mode and command line."""
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) != inode:
                    continue
                flags = int(_read(f"{entry}/fdinfo/{fd.name}").split("flags:")[1].split()[0], 8)
            except (OSError, IndexError, ValueError):
                continue
            mode = {os.O_RDONLY: "read", os.O_WRONLY: "WRITE", os.O_RDWR: "read+write"}.get(flags & os.O_ACCMODE, "?")
            cmdline = _read(f"{entry}/cmdline").replace("\0", " ")[:160]
            holders.append(f"pid {entry.name} fd {fd.name} ({mode} end): {cmdline}")
    return holders


def diagnose(pid: int, stdin_closed: bool = True) -> tuple[str, str]:
    """(cause, report): why the driver `pid` has not exited, read from /proc.

    `stdin_closed`: Playwright has closed its end of the driver's stdin, so any write end still open (also one in
    this process: a leaked duplicate) is what keeps the driver waiting."""
    lines = [f"Playwright driver pid {pid}: {_read(f'/proc/{pid}/cmdline').replace(chr(0), ' ')[:200]}"]
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in _read(f"/proc/{pid}/status").splitlines())}
    lines.append(f"  state {status.get('State')}, threads {status.get('Threads')}, PPid {status.get('PPid')}")
    lines.append(f"  wchan {_read(f'/proc/{pid}/wchan')}")
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        stat = _read(f"{task}/stat")
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
        lines.append(f"  thread {task.name} ({_read(f'{task}/comm')}): state {state}, wchan {_read(f'{task}/wchan')}")
    lines.append("  kernel stack:\n    " + _read(f"/proc/{pid}/stack").replace("\n", "\n    "))
    try:
        stdin = os.readlink(f"/proc/{pid}/fd/0")
    except OSError as exc:
        stdin = f"<{exc.strerror}>"
    holders = pipe_holders(stdin) if stdin.startswith("pipe:") else []
    lines.append(f"  stdin {stdin}, held by:")
    lines.extend(f"    {holder}" for holder in holders)
    try:
        children = [f"{c.pid} {' '.join(c.cmdline())[:120]}" for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        children = []
    lines.append("  children: " + ("; ".join(children) or "none"))
    ours = f"pid {os.getpid()} "
    writers = [h for h in holders if "(WRITE end)" in h and (stdin_closed or not h.startswith(ours))]
    state = status.get("State", "")
    if writers:
        who = "this test process (a leaked duplicate fd)" if writers[0].startswith(ours) else "another process"
        cause = f"{who} still holds the write end of the driver's stdin, so it never sees EOF: {writers[0]}"
    elif state.startswith("T"):
        cause = f"the driver is stopped ({state}): something sent it SIGSTOP/SIGTSTP and no SIGCONT"
    elif "pipe_write" in _read(f"/proc/{pid}/wchan"):
        cause = "the driver is blocked writing to a full pipe (its stdout or stderr is not being read)"
    elif children:
        cause = f"the driver is still waiting on {len(children)} child process(es) (browsers left open?)"
    else:
        cause = f"unknown (state {state}, wchan {_read(f'/proc/{pid}/wchan')}): see the report"
    return cause, "\n".join(lines)


def end_driver(pid: int) -> None:
    """SIGKILL the driver and whatever it started (browsers), each by its PID."""
    try:
        family = [*psutil.Process(pid).children(recursive=True), psutil.Process(pid)]
    except psutil.Error:
        return
    for process in family:
        try:
            os.kill(process.pid, signal.SIGCONT)  # a stopped process is killed too, but cannot clean up
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


class DriverWatch:
    """While Playwright stops, make sure driver `pid` exits; if it does not, say why loudly and end it by PID."""

    def __init__(self, pid: int, report: Callable[[str, str], None], wait: float = EXIT_WAIT) -> None:
        self.pid = pid
        self._report = report
        self._wait = wait
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="playwright-driver-watch", daemon=True)
        self.ended_by_us = False
        #: Set by the caller once Playwright is told to stop (it closes the driver's stdin then).
        self.stopping = False

    def __enter__(self) -> DriverWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        deadline = time.monotonic() + self._wait
        while not self._done.wait(0.2):
            if not _alive(self.pid):
                return
            if time.monotonic() > deadline:
                cause, report = diagnose(self.pid, stdin_closed=self.stopping)
                self.ended_by_us = True
                self._report(cause, report)
                end_driver(self.pid)
                return
