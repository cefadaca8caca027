"""TCP_NODELAY for every connection of a uvicorn with several workers, whose shared socket never gets it."""

from __future__ import annotations

import os
import socket
import stat

# Where a process lists its open file descriptors (Linux, macOS).
FD_DIR = "/dev/fd"


def set_on_listening_sockets() -> int:
    """Set TCP_NODELAY on this process's listening TCP sockets; returns how many. The kernel copies the option to
    every connection a listening socket accepts.

    With --workers > 1, uvicorn binds the socket its workers share without IPPROTO_TCP, and asyncio sets
    TCP_NODELAY only on sockets whose protocol says TCP. Each response then leaves in two writes (headers, body),
    the second held back by Nagle until the peer's delayed ACK: about 40 ms more per call on a kept-alive
    connection, as nginx keeps them. A single uvicorn worker binds through asyncio and already has the option."""
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return 0
    done = 0
    for name in names:
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue  # a file or a pipe: nothing to set (and no duplicate of it may stay open, see below)
            duplicate = os.dup(fd)
        except (OSError, ValueError):
            continue  # closed meanwhile (e.g. the fd of the listing itself)
        # The duplicate is closed whatever happens: a leaked duplicate of a pipe's write end keeps the pipe open, so
        # the process at its other end never sees EOF (this hung the Playwright driver at the end of a test run).
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        with sock:
            try:
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                continue
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM and listening:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                done += 1
    return done
