"""Fixtures: a real `jupyter server` (or JupyterLab) with the extension, pointed at the local stack."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from stack.jupyter import JupyterProcess, extension_args, isolated_env, jupyter_argv
from stack.ports import free_port

from ..support.clients import token_client
from ..support.idp_pages import authorize


class JupyterServer(JupyterProcess):
    """One running Jupyter server: its URLs, its token, its process, its log."""

    def __init__(self, *, origin: str, base_url: str, home: Path, **process: object) -> None:
        super().__init__(url=origin + base_url, **process)  # type: ignore[arg-type]
        self.origin = origin
        self.base_url = base_url
        self.home = home

    @property
    def ui_url(self) -> str:
        return self.url + "mlflow/"

    def http(self) -> requests.Session:
        """A client authenticated to Jupyter with its token (as scripts are)."""
        return token_client(self.token)

    def rss(self) -> int:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).memory_info().rss

    def sign_in(self, stack, username: str) -> None:
        """The server-side sign-in as a browser would do it, driven over HTTP (the IdP's login page)."""
        http = self.http()
        start = http.get(self.ui_url + "oauth/login", allow_redirects=False, timeout=30)
        assert start.status_code == 302, start.text
        callback = authorize(start.headers["Location"], username, stack.password(username))
        done = http.get(callback, allow_redirects=False, timeout=30)
        assert done.status_code == 302, done.text

    def status(self) -> dict:
        return self.http().get(self.ui_url + "oauth/status", timeout=10).json()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def start_jupyter(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., JupyterServer]]:
    """Start Jupyter servers with the extension pointed at the shared stack; all are stopped by PID at the end."""
    started: list[JupyterServer] = []

    def start(*, base_url: str = "/", app: str = "jupyter_server", args: tuple[str, ...] = (),
              upstream_url: str | None = None, home: Path | None = None, on=None) -> JupyterServer:  # fmt: skip
        """`home` shared with another server shares its token cache, hence its MLflow sign-in; `on` another stack."""
        tmp = tmp_path_factory.mktemp("jupyter")
        (tmp / "root").mkdir()
        if home is None:
            home = tmp / "home"
            home.mkdir()
        port = free_port()
        token = os.urandom(16).hex()
        extra = ["--ServerApp.jpserver_extensions={'mlflow_oidc_jupyter.server': True}",
                 *extension_args((on or stack).endpoints, upstream_url), *args]  # fmt: skip
        server = JupyterServer(
            origin=f"http://127.0.0.1:{port}",
            base_url=base_url,
            home=home,
            argv=jupyter_argv(app, port=port, token=token, root_dir=tmp / "root", base_url=base_url, extra=extra),
            env=isolated_env(home, tmp / "runtime"),
            log_path=tmp / "jupyter.log",
            token=token,
        )
        started.append(server)
        server.start(timeout=60.0)
        return server

    try:
        yield start
    finally:
        for server in started:  # all at once: each takes a moment to shut its kernels down
            server.terminate()
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def jupyter(start_jupyter) -> JupyterServer:
    """A Jupyter server of this test module, signed out of MLflow."""
    return start_jupyter()


def browser_sign_in(page, server: JupyterServer, stack, username: str) -> None:
    """In the browser: open /mlflow/ (Jupyter token login), press "Sign in", use the IdP's login page."""
    page.goto(f"{server.ui_url}?token={server.token}")
    page.click("#mlflow-oidc-action")
    page.fill("#username", username)
    page.fill("#password", stack.password(username))
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: urlsplit(url).netloc == urlsplit(server.origin).netloc and "/oauth/" not in url)


@dataclass
class RecordingUpstream:
    """A stand-in tracking server that records what reaches it; answers `/status/<code>` and `/redirect`."""

    url: str
    requests: list[dict] = field(default_factory=list)
    #: Its request handler class, to serve the same stand-in elsewhere (e.g. behind TLS).
    handler: type | None = None


@pytest.fixture(scope="module")
def recording_upstream() -> Iterator[RecordingUpstream]:
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    upstream = RecordingUpstream(url=f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            upstream.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})  # fmt: skip
            path = self.path.split("?")[0]
            if path.startswith("/status/"):
                code = int(path.rsplit("/", 1)[1])
                self._reply(code, {"error_code": "SOME_ERROR", "message": f"upstream said {code}"})
            elif path == "/redirect":
                self._reply(302, {}, location=f"{upstream.url}/landed?x=1")
            else:
                self._reply(200, {"ok": True}, cookie="upstream-session=1; Path=/")

        def _reply(self, code: int, data: dict, location: str | None = None, cookie: str | None = None) -> None:
            payload = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if location:
                self.send_header("Location", location)
            if cookie:
                self.send_header("Set-Cookie", cookie)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    server.RequestHandlerClass = Handler
    upstream.handler = Handler
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
