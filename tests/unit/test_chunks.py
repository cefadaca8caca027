"""Proxied bodies move in pieces up to chunks.CHUNK on both sides, and only the proxied request's connection changes."""

from __future__ import annotations

import asyncio
import http.client
import json

from tornado import web
from tornado.httpclient import HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from mlflow_oidc_jupyter.server import chunks

from ..support.loops import run_coroutine

BODY = 32 * chunks.CHUNK
TORNADO_PIECE = 64 << 10


@web.stream_request_body
class Upload(web.RequestHandler):
    """Records the size of every piece of the request body; widened when the query says so."""

    pieces: list[int]
    read_sizes: list[int]

    def prepare(self) -> None:
        self.pieces = []
        self.restore = chunks.widen_request(self.request.connection) if self.get_argument("wide", "") else None

    def data_received(self, chunk: bytes) -> None:
        self.pieces.append(len(chunk))

    def put(self) -> None:
        stream = self.request.connection.stream  # type: ignore[union-attr]
        self.finish({"pieces": self.pieces, "read_size": stream.read_chunk_size})

    def on_finish(self) -> None:
        if self.restore is not None:
            self.restore()


class Download(web.RequestHandler):
    async def get(self) -> None:
        block = b"x" * chunks.CHUNK
        for _ in range(BODY // chunks.CHUNK):
            self.write(block)
            await self.flush()


def serve() -> tuple[HTTPServer, str]:
    [sock] = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(web.Application([("/up", Upload), ("/down", Download)]), max_body_size=BODY)
    server.add_sockets([sock])
    return server, f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_upstream_client_streams_response_bodies_in_pieces_of_up_to_a_chunk():
    async def main() -> list[int]:
        server, url = serve()
        client = chunks.WideHTTPClient(force_instance=True, max_body_size=2 * BODY)
        pieces: list[int] = []
        try:
            response = await client.fetch(
                HTTPRequest(url + "/down", streaming_callback=lambda c: pieces.append(len(c)))
            )
            assert response.code == 200
        finally:
            client.close()
            server.stop()
        return pieces

    pieces = run_coroutine(main())

    assert sum(pieces) == BODY
    assert max(pieces) <= chunks.CHUNK
    assert max(pieces) > TORNADO_PIECE


def test_a_widened_request_reads_its_body_in_pieces_of_up_to_a_chunk_and_its_connection_is_restored_after():
    def two_uploads(url: str) -> list[dict]:
        """Both on one kept-alive connection: what the first changed must not carry over to the second."""
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
        answers = []
        for path in ("/up?wide=1", "/up"):
            connection.request("PUT", path, body=b"y" * BODY)
            answers.append(json.loads(connection.getresponse().read()))
        connection.close()
        return answers

    async def main() -> list[dict]:
        server, url = serve()
        try:
            return await asyncio.to_thread(two_uploads, url)
        finally:
            server.stop()

    wide, plain = run_coroutine(main())

    assert sum(wide["pieces"]) == sum(plain["pieces"]) == BODY
    assert max(wide["pieces"]) <= chunks.CHUNK
    assert max(wide["pieces"]) > TORNADO_PIECE
    assert wide["read_size"] == chunks.READ_SIZE
    assert max(plain["pieces"]) <= TORNADO_PIECE
    assert plain["read_size"] == TORNADO_PIECE
