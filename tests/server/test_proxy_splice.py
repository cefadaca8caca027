"""Large uploads through `/mlflow/` move by splice() (server/splice.py) and behave as on tornado's path, or better.

A real `jupyter server` with the extension in front of a stand-in tracking server that records what reaches it
(the real MLflow cannot answer early or show an aborted body). Splicing is turned on (`splice_uploads`); the twin
server has it off, the default: tornado's path, the reference every spliced answer is compared with. A spliced
answer is the only one that closes the connection after a successful upload (`Connection: close`): that is how these
tests see which path was taken.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest
import requests

pytestmark = pytest.mark.slow

MiB = 1 << 20
SIZE = 64 * MiB
BLOCK = bytes(range(256)) * (MiB // 256)
#: Headers that differ between any two answers (Jupyter's login cookie is named after the server's port), or by
#: design between the paths.
VARYING = {"date", "connection", "set-cookie"}


class Recorder:
    """A stand-in tracking server. PUT /sink reads the body and answers 200; PUT /refuse/<code> answers <code> at
    once and then reads and drops the body (as nginx and uvicorn do); PUT /slam/<code> answers and closes unread;
    GET answers {}. Every PUT is recorded."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, count: int, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            assert time.monotonic() < deadline, "the upload never finished at the stand-in"
            time.sleep(0.05)
        return self.seen[count - 1]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._reply(200, {})

            def do_PUT(self) -> None:  # noqa: N802
                if self.path.startswith("/slam/"):  # answers, then closes without reading: the kernel resets
                    self._reply(int(self.path.rsplit("/", 1)[1]), {"error_code": "REFUSED", "message": "slammed"})
                    recorder.seen.append({"path": self.path, "complete": False})
                    self.close_connection = True
                    return
                if self.path.startswith("/refuse/"):
                    self._reply(int(self.path.rsplit("/", 1)[1]), {"error_code": "REFUSED", "message": "too big"})
                record = self._read_body()
                recorder.seen.append(record)
                if self.path.split("?")[0] == "/sink":
                    if record["complete"]:
                        self._reply(200, {"received": record["received"]})
                    else:
                        self.close_connection = True

            def _read_body(self) -> dict:
                length = int(self.headers["Content-Length"])
                digest, received, error = hashlib.sha256(), 0, None
                try:
                    while received < length:
                        piece = self.rfile.read1(min(MiB, length - received))
                        if not piece:
                            break
                        digest.update(piece)
                        received += len(piece)
                except OSError as exc:
                    error = type(exc).__name__
                return {"path": self.path, "headers": dict(self.headers), "length": length, "received": received,
                        "complete": received == length, "error": error, "digest": digest.hexdigest()}  # fmt: skip

            def _reply(self, code: int, data: dict) -> None:
                payload = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Set-Cookie", "upstream-session=1; Path=/")
                self.send_header("X-Upstream", "stand-in")
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class Body:
    """`size` bytes as a file with a length (the client sends a Content-Length, as MLflow's does), hashed."""

    def __init__(self, size: int = SIZE) -> None:
        self.size, self.given, self.digest = size, 0, hashlib.sha256()

    def __len__(self) -> int:
        return self.size - self.given

    def read(self, n: int = -1) -> bytes:
        n = min(MiB if n is None or n < 0 else n, self.size - self.given, MiB - self.given % MiB)
        piece = BLOCK[self.given % MiB : self.given % MiB + n]
        self.given += len(piece)
        self.digest.update(piece)
        return piece


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    upstream = Recorder()
    threading.Thread(target=upstream.server.serve_forever, daemon=True).start()
    yield upstream
    upstream.server.shutdown()
    upstream.server.server_close()


@pytest.fixture(scope="module")
def spliced(start_jupyter, stack, recorder):
    """A Jupyter server signed in as alice, in front of the stand-in: large uploads are spliced."""
    server = start_jupyter(upstream_url=recorder.url, args=("--MLflowOIDC.splice_uploads=True",))
    server.sign_in(stack, "alice")
    return server


@pytest.fixture(scope="module")
def plain(start_jupyter, spliced, recorder):
    """The same with `splice_uploads` off, the default (alice's token cache shared): every body goes through tornado."""
    return start_jupyter(upstream_url=recorder.url, home=spliced.home)


def put(server, path: str, body: Body | None = None, **kwargs) -> requests.Response:
    return server.http().put(server.ui_url + path, data=body or Body(), timeout=300, **kwargs)


def settled(value: Callable[[], int], target: int, timeout: float = 60.0) -> int:
    """Wait until `value()` is back at `target` (or give up at the timeout); return the last value."""
    deadline = time.monotonic() + timeout
    while (now := value()) != target and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def test_a_large_upload_is_spliced_byte_for_byte_and_answered_as_on_tornados_path(spliced, plain, recorder):
    bodies = {"spliced": Body(), "plain": Body()}
    answers = {}
    for name, server in (("spliced", spliced), ("plain", plain)):
        http = server.http()
        answers[name] = http.put(server.ui_url + "sink?x=1", data=bodies[name], timeout=300)
        seen = recorder.seen[-1]
        assert (seen["path"], seen["complete"], seen["digest"]) == ("/sink?x=1", True, bodies[name].digest.hexdigest())
        assert seen["headers"]["Authorization"].startswith("Bearer ey")
        assert server.token not in json.dumps(seen["headers"])
        assert http.get(server.ui_url + "after", timeout=30).status_code == 200  # the browser carries on

    spliced_answer, plain_answer = answers["spliced"], answers["plain"]
    assert spliced_answer.status_code == plain_answer.status_code == 200, spliced_answer.text
    assert spliced_answer.json() == plain_answer.json() == {"received": SIZE}
    assert spliced_answer.headers["Connection"] == "close"  # spliced
    assert "close" not in plain_answer.headers.get("Connection", "")  # tornado's path keeps the connection
    spliced_headers = {k.lower(): v for k, v in spliced_answer.headers.items() if k.lower() not in VARYING}
    plain_headers = {k.lower(): v for k, v in plain_answer.headers.items() if k.lower() not in VARYING}
    assert spliced_headers == plain_headers
    assert spliced_headers["x-upstream"] == "stand-in"
    for answer in (spliced_answer, plain_answer):  # Jupyter's own cookie, never the tracking server's
        assert (
            answer.headers["Set-Cookie"].startswith("username-")
            and "upstream-session" not in answer.headers["Set-Cookie"]
        )
    assert "content-security-policy" in spliced_headers and spliced_headers["x-content-type-options"] == "nosniff"
    bearer = recorder.seen[-1]["headers"]["Authorization"].removeprefix("Bearer ")
    assert bearer not in spliced.log() and bearer not in plain.log()


def test_an_early_answer_from_the_tracking_server_reaches_the_browser(spliced, plain, recorder):
    for server in (spliced, plain):
        before = len(recorder.seen)
        answer = put(server, "refuse/413", headers={"Sec-Fetch-Mode": "cors"})

        assert answer.status_code == 413, server
        assert answer.json() == {"error_code": "REFUSED", "message": "too big"}
        assert recorder.wait_for(before + 1)["path"] == "/refuse/413"
    assert "413 PUT /mlflow/refuse/413" in spliced.log()  # logged as Jupyter logs every request


def test_an_answer_before_a_reset_reaches_the_browser_too(spliced, plain):
    """Better than tornado's path, whose upload fails on the reset before it reads the answer (502)."""
    answer = put(spliced, "slam/403", headers={"Sec-Fetch-Mode": "cors"})
    on_tornado = put(plain, "slam/403", headers={"Sec-Fetch-Mode": "cors"})

    assert answer.status_code == 403 and answer.json()["message"] == "slammed"
    print(f"\nanswer before a reset: spliced {answer.status_code}, tornado's path {on_tornado.status_code}")
    assert on_tornado.status_code in (403, 502)


def test_a_browser_leaving_mid_upload_aborts_the_upstream_request_and_leaves_nothing_running(spliced, recorder):
    assert put(spliced, "sink").json() == {"received": SIZE}  # whatever the first upload starts (threads) runs
    process = psutil.Process(spliced.proc.pid)
    threads, fds = process.num_threads(), process.num_fds()
    before = len(recorder.seen)
    host, port = spliced.origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as browser:
        browser.sendall(
            f"PUT {spliced.base_url}mlflow/sink HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: token {spliced.token}\r\nContent-Length: {SIZE}\r\n\r\n".encode()
        )
        for _ in range(16):
            browser.sendall(BLOCK)
    seen = recorder.wait_for(before + 1)

    assert seen["path"] == "/sink" and not seen["complete"] and seen["received"] < SIZE
    assert settled(process.num_threads, threads) == threads
    assert settled(process.num_fds, fds) == fds
    assert put(spliced, "sink").json() == {"received": SIZE}  # and the next upload goes through


def test_an_unreachable_tracking_server_gets_the_same_answer_for_a_large_upload(start_jupyter, spliced):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = start_jupyter(upstream_url=closed, home=spliced.home, args=("--MLflowOIDC.splice_uploads=True",))

    large = put(server, "sink")
    small = put(server, "sink", Body(MiB))

    assert large.status_code == small.status_code == 502
    assert large.json() == small.json()
    assert large.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def refused(server, path: str, headers: dict[str, str], cookies: dict[str, str] | None = None) -> int:
    """The status of a large PUT whose body is never needed: the server answers on the head alone."""
    session = requests.Session()
    session.cookies.update(cookies or {})
    prepared = session.prepare_request(
        requests.Request("PUT", server.url + path, headers={"Content-Length": str(SIZE), **headers}, data=b"")
    )
    host, port = server.origin.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        head = [f"PUT {prepared.path_url} HTTP/1.1", f"Host: {host}:{port}"]
        head += [f"{k}: {v}" for k, v in prepared.headers.items() if k.lower() != "content-length"]
        head += [f"Content-Length: {SIZE}"]
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = conn.recv(65536)
    return int(answer.split(b" ", 2)[1])


def test_large_uploads_that_fail_a_check_are_refused_as_before_and_never_reach_upstream(
    start_jupyter, spliced, recorder
):
    signed_out = start_jupyter(upstream_url=recorder.url, args=("--MLflowOIDC.splice_uploads=True",))
    browser = requests.Session()
    browser.get(f"{spliced.url}api/status?token={spliced.token}", timeout=10)  # Jupyter's login cookie
    cookies = browser.cookies.get_dict()
    before = len(recorder.seen)
    token = {"Authorization": f"token {spliced.token}"}

    assert refused(signed_out, "mlflow/sink", {"Authorization": f"token {signed_out.token}"}) == 401
    assert refused(spliced, "mlflow/sink", {}) == 403  # no Jupyter identity
    assert refused(spliced, "mlflow/sink", {"Origin": spliced.origin}, cookies) == 403  # signed in, no XSRF token
    assert refused(spliced, "mlflow/sink", {**token, "Sec-Fetch-Site": "cross-site"}) == 403
    assert refused(spliced, "mlflow/sink", {**token, "Origin": "http://evil.example"}) == 403
    assert refused(spliced, "mlflow/a/%2e%2e/sink", token) == 400
    assert len(recorder.seen) == before
