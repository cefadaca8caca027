"""Large request bodies moved from the browser's socket to the tracking server's by splice(), outside Python.

Relaying an artifact through tornado costs the Jupyter server about 1 CPU second per GiB: every piece is received
into a fresh zeroed buffer, copied into tornado's read buffer, copied out again and sent. `os.splice()` moves the
bytes socket -> pipe -> socket inside the kernel. The proxy uses it only where nothing is lost by leaving tornado:
a plain-HTTP body of known length (Content-Length of at least MIN_BODY, no Transfer-Encoding) from a plain (non-TLS)
browser connection to a plain-HTTP tracking server, on Linux, after every check of the request has passed.
Everything else stays on tornado's path.

How the connection leaves tornado: inside prepare() of a @stream_request_body handler tornado has read the request
head and nothing of the body yet except what one recv brought along with the head. `take_over` takes that from the
stream's read buffer through its public read API, detaches the connection (as tornado's websockets do) and closes
the stream on a duplicate of its socket, which removes it from the event loop: from then on only `Upload` reads the
socket. The answer goes back through `ResponseWriter`, so the handler's own finish() writes it (status, headers,
Jupyter's security headers, the access log) and the connection closes after it.
"""

from __future__ import annotations

import asyncio
import enum
import fcntl
import http.client
import os
import re
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar, cast
from urllib.parse import urlsplit

from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.iostream import IOStream, StreamClosedError

from . import chunks

#: Bodies from this size on are spliced; the MLflow UI's own requests are far smaller and keep tornado's path.
MIN_BODY = 8 << 20
#: Bytes the pipe between the two sockets holds (the kernel default is 64 KiB: 16x the system calls per GiB).
PIPE_SIZE = 1 << 20
#: Body bytes taken from tornado's read buffer at most before the socket changes hands (one recv is 64 KiB).
MAX_BUFFERED = 1 << 20
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DIGITS = re.compile(r"[0-9]{1,19}")
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; named in fcntl from Python 3.10

T = TypeVar("T")


def supported() -> bool:
    """This Python and tornado can take a connection over and splice (Linux, os.splice, HTTP1Connection.detach)."""
    return sys.platform == "linux" and hasattr(os, "splice") and callable(getattr(HTTP1Connection, "detach", None))


def eligible(request: httputil.HTTPServerRequest, upstream: str) -> bool:
    """Whether this request's body takes the spliced path to `upstream` (the tracking server's base URL)."""
    connection = request.connection
    if request.method not in ("POST", "PUT", "PATCH") or "Transfer-Encoding" in request.headers:
        return False
    if not supported() or not isinstance(connection, HTTP1Connection) or type(connection.stream) is not IOStream:
        return False  # tornado's HTTP/1 over plain TCP only: not TLS, not a Unix socket, nothing else
    if connection.stream.socket.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    target = urlsplit(upstream)
    return target.scheme == "http" and bool(target.hostname) and body_length(request) >= MIN_BODY


def body_length(request: httputil.HTTPServerRequest) -> int:
    """The request's Content-Length when it is exactly one plain decimal number, else 0 (tornado's path decides:
    it checks the header only when it reads the body, after prepare())."""
    values = request.headers.get_list("Content-Length")
    return int(values[0]) if len(values) == 1 and _DIGITS.fullmatch(values[0]) else 0


def connect(upstream: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to the tracking server (blocking: run it in a thread); OSError when it cannot be reached."""
    target = urlsplit(upstream)
    assert target.hostname is not None
    connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=timeout)
    connection.connect()
    return connection


def take_over(request: httputil.HTTPServerRequest) -> tuple[socket.socket, bytes]:
    """The browser's connection out of tornado's hands: its socket, and the body bytes tornado had read already.

    Call it from prepare() of a @stream_request_body handler (tornado reads no body before prepare() returns) and
    never across an await: between the last read and the close below, tornado must not get to read the socket.
    Raises StreamClosedError when the browser has gone.
    """
    connection = request.connection
    assert isinstance(connection, HTTP1Connection)
    stream = connection.stream
    length = body_length(request)
    pieces: list[bytes] = []
    have = 0
    while have < min(length, MAX_BUFFERED):
        # Returns what tornado holds at once; with nothing held it tries one recv, and with nothing there either it
        # stays pending: then nothing is left in tornado's hands, and the close below ends the pending read.
        read = cast("asyncio.Future[bytes]", stream.read_bytes(length - have, partial=True))
        if not read.done():
            break
        piece = read.result()
        pieces.append(piece)
        have += len(piece)
    connection.detach()  # tornado's HTTP handling of this connection ends when prepare() returns
    client = stream.socket.dup()
    stream.close()  # off the event loop; the duplicate keeps the connection open
    return client, b"".join(pieces)


class Outcome(enum.Enum):
    SENT = "the whole body reached the tracking server"
    ANSWERED = "the tracking server answered before the whole body; the rest was read from the browser and dropped"
    UPSTREAM_GONE = "the tracking server stopped reading the body; the rest was read from the browser and dropped"
    CLIENT_GONE = "the browser went away before the whole body; the tracking server's request was aborted"
    TIMED_OUT = "the request took longer than allowed; the tracking server's request was aborted"


class Upload:
    """One request body from the browser's socket to the tracking server's, the request head first (blocking)."""

    def __init__(
        self,
        client: socket.socket,
        upstream: http.client.HTTPConnection,
        buffered: bytes,
        length: int,
        *,
        expect_continue: bool,
        timeout: float,
    ) -> None:
        assert upstream.sock is not None
        self.client = client
        self.upstream = upstream.sock
        self._head = upstream  # holds the request head (with the bearer token) until run() sends it
        self.buffered = buffered
        self.length = length
        self.expect_continue = expect_continue
        self.deadline = time.monotonic() + timeout
        self.error: OSError | None = None

    def run(self) -> Outcome:
        read_end, write_end = os.pipe()
        try:
            try:
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_SIZE)
            except OSError:
                pass  # a smaller pipe (fs.pipe-max-size) only means more system calls
            return self._move(read_end, write_end)
        finally:
            os.close(read_end)
            os.close(write_end)

    def _move(self, read_end: int, write_end: int) -> Outcome:
        try:
            self._head.endheaders()
        except OSError as exc:
            self.error = exc
            return self._drop_rest(read_end, write_end, self.length - len(self.buffered), 0, Outcome.UPSTREAM_GONE)
        self.client.setblocking(False)
        self.upstream.setblocking(False)
        client, upstream = self.client.fileno(), self.upstream.fileno()
        reply = memoryview(CONTINUE if self.expect_continue else b"")
        pending = memoryview(self.buffered)  # goes upstream before anything in the pipe
        left = self.length - len(self.buffered)  # still to come from the browser
        in_pipe = 0
        while pending or left or in_pipe:
            moved = False
            try:
                if reply:
                    sent = self.client.send(reply)
                    reply, moved = reply[sent:], True
                if left and in_pipe < PIPE_SIZE and not reply:
                    got = os.splice(client, write_end, min(left, PIPE_SIZE - in_pipe), flags=_FLAGS_NONBLOCK)
                    if not got:
                        return self._abort(Outcome.CLIENT_GONE)
                    left, in_pipe, moved = left - got, in_pipe + got, True
            except BlockingIOError:
                pass
            except OSError as exc:
                self.error = exc
                return self._abort(Outcome.CLIENT_GONE)
            try:
                if pending:
                    sent = self.upstream.send(pending)
                    pending, moved = pending[sent:], True
                elif in_pipe:
                    # Without SPLICE_F_MORE (MSG_MORE): with it MLflow spent 25-35% more CPU per GiB received (2.05-2.17
                    # against 1.61-1.69 s/GiB in bench/jupyter_proxy.py), and uploads were slower than tornado's path.
                    in_pipe -= os.splice(read_end, upstream, in_pipe, flags=_FLAGS_NONBLOCK)
                    moved = True
            except BlockingIOError:
                pass
            except OSError as exc:
                self.error = exc
                return self._drop_rest(read_end, write_end, left, in_pipe, Outcome.UPSTREAM_GONE)
            if moved:
                continue
            waits = {upstream: select.POLLIN | (select.POLLOUT if pending or in_pipe else 0)}
            # The browser's socket only when the pipe is empty: a pipe holding bytes may be full (its slots hold
            # socket fragments, often far less than a page each), and a readable socket would then wake us at once
            # for nothing. With no events asked, poll still reports a reset: a browser that leaves is seen.
            waits[client] = select.POLLOUT if reply else select.POLLIN if left and not in_pipe else 0
            ready = self._poll(waits)
            if ready is None:
                return self._abort(Outcome.TIMED_OUT)
            if not waits[client] and ready.get(client, 0) & (select.POLLERR | select.POLLHUP):
                return self._abort(Outcome.CLIENT_GONE)
            if ready.get(upstream, 0) & (select.POLLIN | select.POLLHUP | select.POLLERR):
                # An answer (or a close) before the whole body: the request is decided, the rest is not needed.
                return self._drop_rest(read_end, write_end, left, in_pipe, Outcome.ANSWERED)
        return Outcome.SENT

    def _drop_rest(self, read_end: int, write_end: int, left: int, in_pipe: int, outcome: Outcome) -> Outcome:
        """Read the rest of the body from the browser and drop it, so that it can read the answer (as tornado does)."""
        self.client.setblocking(False)
        client = self.client.fileno()
        sink = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            while left or in_pipe:
                if in_pipe:
                    in_pipe -= os.splice(read_end, sink, in_pipe)
                    continue
                try:
                    got = os.splice(client, write_end, min(left, PIPE_SIZE), flags=_FLAGS_NONBLOCK)
                except BlockingIOError:
                    if self._poll({client: select.POLLIN}) is None:
                        return self._abort(Outcome.TIMED_OUT)
                    continue
                except OSError:
                    return self._abort(Outcome.CLIENT_GONE)
                if not got:
                    return self._abort(Outcome.CLIENT_GONE)
                left, in_pipe = left - got, in_pipe + got
        finally:
            os.close(sink)
        return outcome

    def _abort(self, outcome: Outcome) -> Outcome:
        """End the tracking server's request with a reset: a short body must never pass for a whole one."""
        try:
            self.upstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.upstream.close()
        return outcome

    def _poll(self, waits: dict[int, int]) -> dict[int, int] | None:
        """Wait until one of `waits` is ready; None when the deadline has passed."""
        poller = select.poll()
        for fd, events in waits.items():
            poller.register(fd, events)
        left = self.deadline - time.monotonic()
        if left <= 0:
            return None
        ready = poller.poll(left * 1000)
        return dict(ready) if ready else None


_FLAGS_NONBLOCK = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK if hasattr(os, "splice") else 0


async def in_thread(work: Callable[[], T]) -> T:
    """Run blocking `work` in a daemon thread of its own: an upload may take long, and must not hold back the
    shared executor or the server's exit."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:
            pass  # the event loop has closed: the server is exiting

    threading.Thread(target=run, name="mlflow-oidc-upload", daemon=True).start()
    return await done


def answer_connection(upstream: socket.socket, timeout: float) -> HTTP1Connection:
    """Tornado's client side of the tracking server's connection, ready to read the answer (the request is sent)."""
    params = HTTP1ConnectionParameters(
        no_keep_alive=True,
        chunk_size=chunks.CHUNK,
        header_timeout=timeout,
        body_timeout=timeout,
        max_body_size=1 << 50,
        decompress=False,
    )
    connection = HTTP1Connection(IOStream(upstream), True, params)
    connection.finish()  # the request went out by other means; tornado reads the answer as for its own
    return connection


class ResponseWriter(httputil.HTTPConnection):
    """The handler's answer on a taken-over browser connection: written as tornado would, then the connection closes.

    Headers come from the handler as for any answer (tornado has validated them); the body ends with the close when
    it has no Content-Length, so no chunked framing is needed.
    """

    def __init__(self, client: socket.socket) -> None:
        self.stream = IOStream(client)

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        pass  # nothing reads this connection any more: a close is seen when a write fails

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {start_line.code} {start_line.reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers.get_all())
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("Illegal characters (CR or LF) in a response header")
        return self.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (chunk or b""))

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self.stream.closed():
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_exception(StreamClosedError())
        else:
            future = self.stream.write(chunk)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # a browser gone is no error here
        return future

    def finish(self) -> None:
        if not self.stream.closed():
            self.write(b"").add_done_callback(lambda _f: self.stream.close())

    def close(self) -> None:
        self.stream.close()
