"""The streaming reverse proxy from `{base_url}mlflow/` to the tracking server, with the server session's token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from tornado import httputil, web
from tornado.httpclient import HTTPRequest, HTTPResponse
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPTimeoutError

from ..errors import LoginRequired, OIDCError
from . import chunks, forwarding, overlay, pages
from .handlers import MLflowHandler, is_navigation

#: Request body pieces (up to chunks.CHUNK each) held between browser and upstream: back-pressure beyond this.
BODY_QUEUE_CHUNKS = 4
#: Response bytes gathered before each write to the browser (upstream delivers up to chunks.CHUNK per piece, fewer
#: when it is quick; each write is awaited).
FLUSH_EVERY = 1 << 20
#: Lifts the server-wide upload limit for proxied requests: artifacts of any size stream through.
MAX_UPLOAD = 1 << 50
#: UI bundles above this size are passed through without rewriting their links (today's largest is 4.4 MB).
MAX_REWRITE = 32 << 20
#: Bytes of an upstream error body kept to explain the error on our page.
MAX_ERROR_DETAIL = 4096
XSRF_HEADER_COOKIE = "mlflow-request-header-X-XSRFToken"

_END = object()
_ABORT = object()


class Staging:
    """Chunks gathered into one buffer for one write, the same buffer every time, instead of b"".join.

    A new joined buffer of up to 1 MiB per write made glibc map and zero fresh pages each time (160 page faults per
    MiB up, 460 down): a quarter of the Jupyter server's CPU per GiB moved. Reuse is safe only when every write is
    awaited before the next gather: tornado resolves a write once its stream has sent every byte of it.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def gather(self, chunks: list[bytes]) -> memoryview | bytes:
        if len(chunks) == 1:
            return chunks[0]  # nothing to join
        size = sum(map(len, chunks))
        if len(self._buffer) < size:
            self._buffer = bytearray(size)  # a new one: views of the old one may still be alive
        end = 0
        for chunk in chunks:
            self._buffer[end : end + len(chunk)] = chunk
            end += len(chunk)
        return memoryview(self._buffer)[:end]


class ClientGone(Exception):
    """The browser went away before its request body was complete."""


class SlashRedirectHandler(MLflowHandler):
    """`/mlflow` → `/mlflow/`: the UI's relative URLs only resolve under the trailing slash."""

    @web.authenticated
    def get(self) -> None:
        query = self.request.query
        self.redirect(self.ext.ui_path + (f"?{query}" if query else ""))


@web.stream_request_body
class ProxyHandler(MLflowHandler):
    """Authenticated Jupyter user in, bearer token of the server session upstream; bodies stream both ways."""

    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

    def initialize(self, ext: Any) -> None:
        super().initialize(ext)
        self._body: asyncio.Queue[object] | None = None
        self._upstream: asyncio.Future[HTTPResponse] | None = None
        self._upstream_status: httputil.ResponseStartLine | None = None
        self._upstream_headers = httputil.HTTPHeaders()
        self._mode = "stream"
        self._rewrite: Callable[[bytes], bytes] = bytes
        self._held: list[bytes] = []
        self._held_size = 0
        self._unsent: list[bytes] = []
        self._unsent_size = 0
        self._restore_reads: Callable[[], None] | None = None
        self._response_staging = Staging()
        self._body_started = False
        self._path = ""

    def flush(self, include_footers: bool = False) -> Any:
        if self._upstream is None:
            # Answered before the request body was read (refused, signed out, redirected): tornado closes the
            # connection after such an answer, so say so, or a client reusing it gets "connection reset".
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    # -- deciding ---------------------------------------------------------------------------------------------

    async def prepare(self) -> None:  # type: ignore[override]
        # Jupyter's own checks first: identity, host, and for unsafe methods XSRF token and Origin.
        await super().prepare()
        if not self.current_user:
            if not self.settings.get("allow_unauthenticated_access", False):
                return  # Jupyter itself sent the browser to its login page (or refused), as for every handler
            # Handlers without @web.authenticated are public since jupyter_server 2.13; the upstream request
            # starts here, before any method runs, so the method decorators alone would come too late.
            # A browser's fetch or worker script cannot sign in: answer it, never send it through the login. Under
            # JupyterHub that round trip renews the _xsrf cookie, and the UI's other fetches then fail its check.
            fetch_mode = self.request.headers.get("Sec-Fetch-Mode", "navigate")
            if self.request.method in ("GET", "HEAD") and fetch_mode == "navigate":
                login = self.get_login_url()
                # As tornado's @authenticated: a login URL with a query carries the way back itself (JupyterHub's
                # OAuth URL keeps it in its state); appending ?next= would corrupt that state.
                self.redirect(login if "?" in login else login + "?next=" + quote(self.request.uri or "/", safe=""))
                return
            raise web.HTTPError(403)
        self._reject_cross_site()
        if self.require_configured() is None:
            return
        prefix = self.ext.ui_path
        try:
            self._path = forwarding.upstream_path((self.request.path or "")[len(prefix) :])
        except ValueError as exc:
            self.answer(400, pages.page("Bad path", str(exc)), code="INVALID_PARAMETER_VALUE", message=str(exc))
            return
        try:
            # A fresh token needs no thread hop; only a refresh (which may block) goes to a thread.
            token = self.ext.session.fresh_token() or await asyncio.to_thread(self.ext.session.access_token)
        except LoginRequired as exc:
            self._signed_out(exc.reason)
            return
        except OIDCError as exc:
            self.answer(502, pages.page("Sign-in problem", str(exc)), code="TEMPORARILY_UNAVAILABLE", message=str(exc))
            return
        if self.request.method == "GET" and is_navigation(self.request):
            self._share_xsrf_token()
            self.remember_browser()
        self._start_upstream(token)

    def _reject_cross_site(self) -> None:
        """Only this origin may drive the proxy; other sites may at most link to a page (a top-level GET)."""
        headers = self.request.headers
        site = headers.get("Sec-Fetch-Site")
        navigation = self.request.method in ("GET", "HEAD") and headers.get("Sec-Fetch-Mode") == "navigate"
        if site in ("cross-site", "same-site") and not navigation:
            raise web.HTTPError(403, "Cross-site request to the MLflow proxy blocked (Sec-Fetch-Site: %s)", site)
        origin = headers.get("Origin")
        if origin is not None and urlsplit(origin.lower()).netloc != headers.get("Host", "").lower():
            raise web.HTTPError(403, "Cross-origin request to the MLflow proxy blocked (Origin: %s)", origin)

    def _signed_out(self, reason: str) -> None:
        next_path = None
        if is_navigation(self.request):
            query = forwarding.query_string(self.request.query)  # never carry Jupyter's ?token= along
            next_path = (self.request.path or self.ext.ui_path) + (f"?{query}" if query else "")
        html = pages.signed_out(self.login_url(next_path), reason)
        self.answer(
            401,
            html,
            code="UNAUTHENTICATED",
            message=f"Not signed in to MLflow: open {self.login_url()} in the browser.",
        )

    def _share_xsrf_token(self) -> None:
        # The MLflow UI copies cookies named mlflow-request-header-<Name> into request headers: this makes its
        # POSTs carry Jupyter's XSRF token, so Jupyter's XSRF check stays on for the whole UI.
        token = self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token
        self.set_cookie(XSRF_HEADER_COOKIE, token, path=self.ext.ui_path, samesite="Strict")

    # -- upstream ---------------------------------------------------------------------------------------------

    def _start_upstream(self, token: str) -> None:
        request = self.request
        query = forwarding.query_string(request.query)
        url = f"{self.ext.upstream}/{self._path}" + (f"?{query}" if query else "")
        headers = forwarding.request_headers(request.headers, token)
        headers.update(
            forwarding.forwarded_headers(
                proto=request.protocol, host=request.host, client_ip=request.remote_ip or "", prefix=self.ext.ui_path
            )
        )
        if forwarding.rewriter(self._path) is not None or overlay.is_ui_index(self._path):
            headers["Accept-Encoding"] = "identity"  # rewritten below, so we need the plain text
        has_body = int(request.headers.get("Content-Length", "0") or 0) > 0 or "Transfer-Encoding" in request.headers
        body_producer: Any = None  # tornado's stub says Future; any awaitable works and flow control needs one
        if has_body:
            request.connection.set_max_body_size(MAX_UPLOAD)  # type: ignore[union-attr]
            self._restore_reads = chunks.widen_request(request.connection)
            self._body = asyncio.Queue(maxsize=BODY_QUEUE_CHUNKS)
            body_producer = self._produce_body
        verify = self.ext.verify
        upstream_request = HTTPRequest(
            url,
            method=request.method or "GET",
            headers=headers,
            body=None if has_body or request.method not in ("POST", "PUT", "PATCH") else b"",
            body_producer=body_producer,
            follow_redirects=False,
            decompress_response=False,
            allow_nonstandard_methods=True,
            connect_timeout=self.ext.connect_timeout,
            request_timeout=self.ext.request_timeout,
            validate_cert=verify is not False,
            ca_certs=verify if isinstance(verify, str) else None,
            header_callback=self._on_header_line,
            streaming_callback=self._on_chunk,
        )
        self._upstream = asyncio.ensure_future(self.ext.http_client.fetch(upstream_request, raise_error=False))
        self._upstream.add_done_callback(lambda _f: self._release_body())

    async def _produce_body(self, write: Callable[[bytes | memoryview], Awaitable[None]]) -> None:
        assert self._body is not None
        while True:
            # One awaited write per piece: pieces are up to chunks.CHUNK (1 MiB), so a trip through the event
            # loop per piece is noise, and writing them as they are copies nothing.
            piece = await self._body.get()
            if piece is _END:
                return
            if piece is _ABORT:
                raise ClientGone("the browser closed the connection during the upload")
            await write(piece)  # type: ignore[arg-type]

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._body is None or self._upstream is None or self._upstream.done():
            return None  # nothing to feed (refused before the upstream request, or upstream already answered)
        return self._body.put(chunk)

    def _release_body(self) -> None:
        """Upstream finished (perhaps without reading the whole body): unblock a browser upload in progress."""
        if self._body is not None:
            while not self._body.empty():
                self._body.get_nowait()

    def on_finish(self) -> None:
        if self._restore_reads is not None:
            self._restore_reads()
        super().on_finish()

    def on_connection_close(self) -> None:
        if self._body is not None and self._upstream is not None and not self._upstream.done():
            self._release_body()
            self._body.put_nowait(_ABORT)

    # -- response ---------------------------------------------------------------------------------------------

    def _on_header_line(self, line: str) -> None:
        if self._upstream_status is None:
            self._upstream_status = httputil.parse_response_start_line(line.strip())
        elif line == "\r\n":
            self._on_headers()
        else:
            self._upstream_headers.parse_line(line)

    def _on_headers(self) -> None:
        assert self._upstream_status is not None
        code = self._upstream_status.code
        if is_navigation(self.request) and (code in (401, 403) or code >= 500):
            self._mode = "page"
            return
        plain = "Content-Encoding" not in self._upstream_headers
        rewrite = forwarding.rewriter(self._path)
        if code == 200 and rewrite is not None and plain:
            self._mode = "rewrite"
            self._rewrite = rewrite
        elif code == 200 and overlay.is_ui_index(self._path) and plain and self.request.method == "GET":
            if "text/html" in self._upstream_headers.get("Content-Type", ""):
                self._mode = "inject"  # the identity chip and the 401 banner join the UI
        self.clear_header("Content-Type")
        self.set_status(code, self._upstream_status.reason or None)
        seen: set[str] = set()
        for name, value in forwarding.response_headers(self._upstream_headers):
            lowered = name.lower()
            if lowered == "content-length" and self._mode in ("rewrite", "inject"):
                continue
            if lowered == "location":
                value = forwarding.rewrite_location(value, self.ext.upstream, self.ext.ui_path)
            if lowered in seen:
                self.add_header(name, value)
            else:
                self.set_header(name, value)  # replaces our defaults (e.g. Content-Security-Policy)
                seen.add(lowered)

    async def _on_chunk(self, chunk: bytes) -> None:
        if self._mode == "stream":
            self._unsent.append(chunk)
            self._unsent_size += len(chunk)
            if self._unsent_size >= FLUSH_EVERY:
                # One write at a time, awaited: tornado waits for it before reading more from upstream (memory
                # stays flat). Per 64 KiB chunk that wait cost downloads half their speed; per MiB it is noise.
                await self._send_unsent()
        elif self._mode in ("rewrite", "inject"):
            self._hold(chunk)
            if self._held_size > MAX_REWRITE:
                self._mode = "stream"
                self.write(b"".join(self._held))
                self._held = []
                self._body_started = True
                await self.flush()
        elif self._held_size < MAX_ERROR_DETAIL:
            self._hold(chunk)

    def _hold(self, chunk: bytes) -> None:
        self._held.append(chunk)
        self._held_size += len(chunk)

    async def _send_unsent(self) -> None:
        """Send the gathered response bytes to the browser and wait until they are on their way."""
        pieces, self._unsent, self._unsent_size = self._unsent, [], 0
        if not pieces:
            return
        if not self._body_started or self.settings.get("compress_response") or self.settings.get("gzip"):
            # The first write carries our headers, and a compressing server must pass every byte through its
            # transforms: both go through tornado's own write and flush.
            self._body_started = True
            self.write(b"".join(pieces))
            await self.flush()
        else:
            # What tornado's flush would send, without its join (see Staging); its streams take any buffer.
            view = self._response_staging.gather(pieces)
            await self.request.connection.write(view)  # type: ignore[union-attr, arg-type]

    async def _relay(self) -> None:
        """Wait for the upstream response (its body has been streaming meanwhile) and finish ours."""
        if self._upstream is None:
            return  # answered in prepare()
        if self._body is not None:
            await self._body.put(_END)
        error: BaseException | None
        try:
            response = await self._upstream
            error = response.error if response.code == 599 else None
        except Exception as exc:  # raise_error=False still raises connection and stream errors
            error = exc
        if error is not None and self._upstream_status is None:
            self._unreachable(error)
        elif error is not None:
            # Broke off mid-body: closing tells the browser the download failed instead of finishing it short.
            # (tornado's own finish afterwards writes nothing to the closed connection).
            self.log.warning("MLflow proxy: upstream response for /%s broke off: %s", self._path, error)
            self.request.connection.close()  # type: ignore[union-attr]
        elif self._mode == "page":
            assert self._upstream_status is not None
            self._error_page(self._upstream_status.code)
        elif self._mode == "rewrite":
            self.finish(self._rewrite(b"".join(self._held)))
        elif self._mode == "inject":
            self.finish(overlay.inject(b"".join(self._held), self.ext.public_path(overlay.SCRIPT_ROUTE)))
        else:
            try:
                await self._send_unsent()
            except StreamClosedError:
                return  # the browser left: nobody to finish for
            self.finish()

    def _unreachable(self, error: BaseException) -> None:
        if isinstance(error, ClientGone) or self.request.connection.stream.closed():  # type: ignore[union-attr]
            return  # nobody to answer; tornado's own finish writes nothing to the closed connection
        reason = f"{type(error).__name__}: {error}"
        status = 504 if isinstance(error, (HTTPTimeoutError, TimeoutError)) else 502
        self.log.warning("MLflow proxy: tracking server %s unreachable: %s", self.ext.upstream, reason)
        self.answer(
            status,
            pages.unreachable(self.ext.upstream, reason),
            code="TEMPORARILY_UNAVAILABLE",
            message=f"MLflow tracking server unreachable ({reason})",
        )

    def _error_page(self, status: int) -> None:
        detail: str | None = None
        try:
            detail = json.loads(b"".join(self._held)[:MAX_ERROR_DETAIL]).get("message")
        except (ValueError, AttributeError):
            detail = None
        html = pages.upstream_error(status, self.login_url(self.ext.ui_path), detail)
        self.answer(status, html, code="UPSTREAM_ERROR", message=detail or f"HTTP {status}")

    # -- methods (prepare() did the checks and started the streams; every method only waits for them) ---------

    @web.authenticated
    async def get(self, path: str) -> None:
        await self._relay()

    head = post = put = patch = delete = options = get
