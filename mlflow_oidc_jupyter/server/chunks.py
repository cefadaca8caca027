"""Proxied bodies read in 1 MiB pieces instead of tornado's 64 KiB, on both sides of the `/mlflow/` proxy.

Tornado hands a body on `chunk_size` bytes at a time (64 KiB), each piece a copy and an awaited delivery: per GiB
16384 trips through Python, most of the Jupyter server's CPU when it relays an artifact. Both `chunk_size` and the
stream's `read_chunk_size` (bytes per recv) are read anew for every piece, so a request or an upstream connection
can have its own. The recv size grows less than the piece: tornado allocates and zeroes a whole `read_chunk_size`
buffer for every recv, however little it returns. Memory stays bounded by the pieces, not the body: tornado's read
buffer holds at most one piece plus one recv, and the proxy keeps at most a few pieces in flight.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPConnection
from tornado.iostream import IOStream
from tornado.simple_httpclient import SimpleAsyncHTTPClient, _HTTPConnection

#: Bytes per piece of a proxied body, handed on at once.
CHUNK = 1 << 20
#: Bytes per recv while reading a piece.
READ_SIZE = 256 << 10


def _widen(params: HTTP1ConnectionParameters, stream: IOStream) -> None:
    # A piece plus one recv must fit tornado's read buffer, or the stream closes ("Reached maximum read buffer").
    params.chunk_size = max(params.chunk_size, min(CHUNK, stream.max_buffer_size // 2))
    stream.read_chunk_size = max(stream.read_chunk_size, min(READ_SIZE, stream.max_buffer_size // 2))


def widen_request(connection: HTTPConnection | None) -> Callable[[], None]:
    """Read this request's body in CHUNK pieces; returns what puts the connection back as it was.

    Only this request changes: the connection parameters are copied (tornado shares one object among all
    connections), and the stream's read size, which outlives the request on a kept-alive connection, is restored.
    """
    if not isinstance(connection, HTTP1Connection):
        return lambda: None
    stream = connection.stream
    before = stream.read_chunk_size
    connection.params = copy.copy(connection.params)
    _widen(connection.params, stream)

    def restore() -> None:
        stream.read_chunk_size = before

    return restore


class _WideConnection(_HTTPConnection):
    """One upstream request whose response body arrives in CHUNK pieces."""

    def _create_connection(self, stream: IOStream) -> HTTP1Connection:
        connection = super()._create_connection(stream)  # its parameters are made for this connection alone
        _widen(connection.params, stream)
        return connection


class WideHTTPClient(SimpleAsyncHTTPClient):
    """Tornado's own HTTP client, reading response bodies in CHUNK pieces (streaming callbacks get CHUNK at most)."""

    def _connection_class(self) -> type:
        return _WideConnection
