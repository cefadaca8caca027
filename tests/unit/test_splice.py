"""A large upload leaves tornado inside prepare() and moves by splice(): byte for byte, with what tornado had read.

Real tornado server, real sockets, a stand-in upstream in a thread. These also guard what splice.py relies on in
tornado (HTTP1Connection.detach inside prepare() of a @stream_request_body handler stops tornado's own reading of
the body; IOStream.read_bytes(partial=True) hands over what it has buffered): a tornado release that changes either
loses or duplicates body bytes here, or hangs until the relay's deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Iterator

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.netutil import bind_sockets

from mlflow_oidc_jupyter.server import splice

from ..support.loops import run_coroutine

pytestmark = pytest.mark.skipif(not splice.supported(), reason="splice() needs Linux and Python 3.10+")

MiB = 1 << 20
SIZE = 24 * MiB
BLOCK = bytes(range(256)) * (MiB // 256)


class Sink:
    """A stand-in tracking server: reads one request body, records its digest, answers 201 with a JSON body."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received: list[tuple[int, str]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))  # fmt: skip
                digest, got = hashlib.sha256(body), len(body)
                while got < length:
                    piece = conn.recv(MiB)
                    if not piece:
                        break
                    digest.update(piece)
                    got += len(piece)
                self.received.append((got, digest.hexdigest()))
                conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 12\r\n"
                             b"Connection: close\r\n\r\n{\"ok\": true}")  # fmt: skip

    def close(self) -> None:
        self.listener.close()


@web.stream_request_body
class Relay(web.RequestHandler):
    """Takes the connection over in prepare(), as the proxy does, splices the body and relays the answer."""

    def initialize(self, upstream: str) -> None:
        self.upstream = upstream

    async def prepare(self) -> None:
        request = self.request
        if request.method != "PUT":
            return
        head = await asyncio.to_thread(splice.connect, self.upstream, 10)
        head.putrequest("PUT", "/sink", skip_host=True, skip_accept_encoding=True)
        for name, value in (("Host", "sink"), ("Content-Length", str(splice.body_length(request)))):
            head.putheader(name, value)
        client, buffered = splice.take_over(request)
        upload = splice.Upload(client, head, buffered, splice.body_length(request), expect_continue=False, timeout=20)
        outcome = await splice.in_thread(upload.run)
        request.connection = splice.ResponseWriter(client)
        connection = splice.answer_connection(upload.upstream, 20)
        answer = Answer()
        await connection.read_response(answer)
        connection.close()
        self.set_status(answer.code)
        self.finish({"outcome": outcome.name, "buffered": len(buffered), "upstream": json.loads(answer.body)})

    def get(self) -> None:
        self.finish({"plain": True})


class Answer:
    """Collects the upstream answer (tornado's HTTPMessageDelegate interface)."""

    def __init__(self) -> None:
        self.code = 0
        self.body = b""

    def headers_received(self, start_line, headers) -> None:  # noqa: ANN001
        self.code = start_line.code

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk

    def finish(self) -> None:
        pass

    def on_connection_close(self) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[Sink]:
    upstream = Sink()
    yield upstream
    upstream.close()


def serve(sink: Sink) -> tuple[HTTPServer, int]:
    [sock] = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([("/up", Relay, {"upstream": sink.url})]), max_body_size=1 << 40)
    server.add_sockets([sock])
    return server, sock.getsockname()[1]


def upload_with_body_behind_the_head(port: int) -> tuple[bytes, str]:
    """PUT SIZE bytes whose first 256 KiB leave in the same send as the head (tornado reads them with it)."""
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        head = b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SIZE
        conn.sendall(head + BLOCK[: 256 << 10])
        digest.update(BLOCK[: 256 << 10])
        conn.sendall(BLOCK[256 << 10 :])
        digest.update(BLOCK[256 << 10 :])
        for _ in range(SIZE // MiB - 1):
            conn.sendall(BLOCK)
            digest.update(BLOCK)
        answer = b""
        while piece := conn.recv(65536):  # the relay closes the connection after its answer
            answer += piece
    return answer, digest.hexdigest()


def test_a_taken_over_upload_reaches_upstream_byte_for_byte_with_what_tornado_had_read(sink):
    async def main() -> tuple[bytes, str, bytes]:
        server, port = serve(sink)
        try:
            answer, digest = await asyncio.to_thread(upload_with_body_behind_the_head, port)
            with socket.create_connection(("127.0.0.1", port)) as conn:  # the server serves on as before
                conn.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                after = b""
                while piece := await asyncio.to_thread(conn.recv, 65536):
                    after += piece
        finally:
            server.stop()
        return answer, digest, after

    answer, digest, after = run_coroutine(main())

    head, body = answer.split(b"\r\n\r\n", 1)
    relayed = json.loads(body)
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert b"\r\nConnection: close" in head
    assert relayed["outcome"] == "SENT" and relayed["upstream"] == {"ok": True}
    assert relayed["buffered"] > 0, "the test must have had body bytes in tornado's buffer at the take-over"
    assert sink.received == [(SIZE, digest)]
    assert after.startswith(b"HTTP/1.1 200 OK") and after.endswith(b'{"plain": true}')


@pytest.mark.parametrize(
    ("values", "length"),
    [(["16777216"], 16 << 20), (["16777216", "16777216"], 0), (["16,16"], 0), (["²"], 0), (["+5"], 0), ([], 0)],
)
def test_only_one_plain_decimal_content_length_counts(values, length):
    headers = HTTPHeaders({"Host": "x"})
    for value in values:
        headers.add("Content-Length", value)

    request = HTTPServerRequest(start_line=RequestStartLine("PUT", "/", "HTTP/1.1"), headers=headers)

    assert splice.body_length(request) == length
