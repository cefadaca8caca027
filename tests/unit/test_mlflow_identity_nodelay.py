"""The identity app sets TCP_NODELAY where uvicorn's multi-worker socket lacks it: on real loopback sockets."""

from __future__ import annotations

import os
import socket
from contextlib import closing

from mlflow_oidc_identity.nodelay import set_on_listening_sockets


def _listener() -> socket.socket:
    """A listening socket made as uvicorn makes the one its workers share: no protocol given (0, not IPPROTO_TCP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _accepted_nodelay(listener: socket.socket) -> int:
    with closing(socket.create_connection(listener.getsockname(), timeout=5)):
        accepted, _ = listener.accept()
        with accepted:
            return accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_connections_accepted_by_a_plain_listener_have_no_nodelay():
    """The fault itself: without the fix, a connection accepted on such a socket keeps Nagle on."""
    with _listener() as listener:
        assert _accepted_nodelay(listener) == 0


def test_connections_of_listening_sockets_get_nodelay_and_nothing_else_is_touched():
    with _listener() as listener, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unbound:
        assert set_on_listening_sockets() >= 1
        assert _accepted_nodelay(listener) != 0
        assert unbound.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # not listening: left alone


def test_no_descriptor_is_left_open_not_even_a_duplicate_of_a_pipe():
    """A duplicate left open of a pipe's write end keeps the pipe open: the reader never sees EOF. This hung the
    Playwright driver (node, reading its stdin) at the end of the whole test suite, after this test ran."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)  # a write end still open somewhere fails the test instead of hanging it
    try:
        before = set(os.listdir("/dev/fd"))
        with _listener():
            set_on_listening_sockets()
        os.close(write_end)
        write_end = -1
        try:
            assert os.read(read_end, 1) == b""  # EOF: no other write end is open
        except BlockingIOError:
            raise AssertionError("a duplicate of the pipe's write end was left open") from None
        assert set(os.listdir("/dev/fd")) <= before
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
