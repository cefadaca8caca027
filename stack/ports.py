"""Loopback ports: a free one for a new process, or whether a chosen one is still free."""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
#: Ports handed out are below the kernel's ephemeral range (where outgoing connections take their local ports).
LOWEST = 20000
#: Ports handed out are noted here (one empty file each) for a while, so that two processes starting stacks at once
#: (parallel test workers, two engineers) never get the same port before either has bound it.
RESERVATIONS = Path(tempfile.gettempdir()) / "mlflow-oidc-ports"
#: Long enough for the slowest start to bind its port: Keycloak binds at the end of a start of minutes under load.
RESERVED_FOR = 1800.0


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now and no other stack was just given, below the ephemeral range.

    Not `bind(("127.0.0.1", 0))`: that returns an ephemeral port, which any outgoing connection on the machine may
    take before our process binds it. With seven test workers at once, configurable-http-proxy found its port taken
    that way (EADDRINUSE) and the browser talked to whoever held it.
    """
    candidates = range(LOWEST, max(LOWEST + 1, ephemeral_low()))
    for port in random.sample(candidates, min(len(candidates), 500)):
        if port_free(port, host) and _reserve(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # the range is full: let the OS pick
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _reserve(port: int) -> bool:
    """Note `port` as handed out; False when another process noted it less than RESERVED_FOR seconds ago."""
    RESERVATIONS.mkdir(exist_ok=True)
    path = RESERVATIONS / str(port)
    try:
        if time.time() - path.stat().st_mtime > RESERVED_FOR:
            path.unlink(missing_ok=True)  # an old note: that process has bound the port long ago, or given up
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def port_free(port: int, host: str = HOST) -> bool:
    """Whether `port` can be bound on `host` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
