"""Back-pressure through the `/mlflow/` proxy: a slow side holds the transfer back, the server never buffers the body.

A stand-in tracking server counts the bytes it has sent or read, and can hold its side still (the real MLflow
cannot be slowed down on purpose). A transfer "stalls" when its progress stops growing: the fast side then waits
on the slow one, and what lies between them (the Jupyter server plus the kernel's socket buffers) must stay small.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

pytestmark = pytest.mark.slow

MiB = 1 << 20
SIZE = 256 * MiB
BLOCK = bytes(range(256)) * (MiB // 256)
#: What the Jupyter server may hold of a stalled body (its pieces in flight), far below the body.
SERVER_HOLDS = 32 * MiB
#: What may lie between the two sides in all (server plus four socket buffers, which Linux grows up to 32 MiB each).
IN_FLIGHT = SIZE // 2


class StandIn:
    """A tracking server stand-in: GET streams SIZE bytes, PUT reads the body once `reading` is set."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.received_digest = hashlib.sha256()
        self.reading = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Length", str(SIZE))
                self.end_headers()
                for _ in range(SIZE // MiB):
                    self.wfile.write(BLOCK)  # blocks while the proxy does not read on
                    stand_in.sent += MiB

            def do_PUT(self) -> None:  # noqa: N802
                assert stand_in.reading.wait(300)
                left = int(self.headers["Content-Length"])
                while left:
                    piece = self.rfile.read(min(MiB, left))
                    stand_in.received_digest.update(piece)
                    stand_in.received += len(piece)
                    left -= len(piece)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class CountedBody:
    """SIZE bytes as a file with a length (so the client sends a Content-Length, as MLflow's does), counting reads."""

    def __init__(self) -> None:
        self.given = 0
        self.digest = hashlib.sha256()

    def __len__(self) -> int:
        return SIZE - self.given

    def read(self, n: int = -1) -> bytes:
        n = min(MiB if n is None or n < 0 else n, SIZE - self.given, MiB - self.given % MiB)
        start = self.given % MiB
        piece = BLOCK[start : start + n]
        self.given += len(piece)
        self.digest.update(piece)
        return piece


def stalled(progress: Callable[[], int], timeout: float = 120.0) -> int:
    """Wait until `progress()` stops growing (unchanged for 20 looks 50 ms apart), and return it."""
    deadline = time.monotonic() + timeout
    last, unchanged = progress(), 0
    while unchanged < 20:
        assert time.monotonic() < deadline, "the transfer never stalled: nothing held it back"
        time.sleep(0.05)
        now = progress()
        unchanged = unchanged + 1 if now == last else 0
        last = now
    return last


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    upstream = StandIn()
    thread = threading.Thread(target=upstream.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        upstream.reading.set()
        upstream.server.shutdown()
        upstream.server.server_close()


@pytest.fixture(scope="module")
def server(start_jupyter, stack, stand_in):
    """A Jupyter server signed in as alice, in front of the stand-in."""
    jupyter = start_jupyter(upstream_url=stand_in.url)
    jupyter.sign_in(stack, "alice")
    return jupyter


def test_a_slow_reader_holds_the_download_back_without_the_server_buffering_it(server, stand_in):
    before = server.rss()
    with server.http().get(server.ui_url + "big", stream=True, timeout=300) as answer:
        digest = hashlib.sha256(answer.raw.read(MiB))
        sent = stalled(lambda: stand_in.sent)
        held = server.rss() - before
        for piece in answer.iter_content(MiB):  # the reader goes on: the rest arrives
            digest.update(piece)

    print(f"\nstalled download: upstream sent {sent / MiB:.0f} MiB of {SIZE // MiB}, reader took 1, "
          f"server RSS {held / MiB:+.1f} MiB")  # fmt: skip
    assert answer.status_code == 200
    assert sent - MiB < IN_FLIGHT
    assert held < SERVER_HOLDS
    assert digest.hexdigest() == hashlib.sha256(BLOCK * (SIZE // MiB)).hexdigest()


def test_a_slow_upstream_holds_the_upload_back_without_the_server_buffering_it(server, stand_in):
    body = CountedBody()
    answer: list[requests.Response] = []
    before = server.rss()
    upload = threading.Thread(
        target=lambda: answer.append(server.http().put(server.ui_url + "sink", data=body, timeout=300)), daemon=True
    )
    upload.start()
    try:
        given = stalled(lambda: body.given)
        held = server.rss() - before
    finally:
        stand_in.reading.set()  # the upstream reads on: the rest goes through
        upload.join(300)

    print(f"\nstalled upload: client gave {given / MiB:.0f} MiB of {SIZE // MiB}, upstream read 0, "
          f"server RSS {held / MiB:+.1f} MiB")  # fmt: skip
    assert given < IN_FLIGHT
    assert held < SERVER_HOLDS
    assert answer and answer[0].status_code == 200
    assert stand_in.received == SIZE
    assert stand_in.received_digest.hexdigest() == body.digest.hexdigest()
