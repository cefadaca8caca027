"""Interactive sign-in flows: device authorization polling and auth code + PKCE over a loopback redirect."""

from __future__ import annotations

import logging
import threading
import time
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from ..errors import LoginFailed, ProviderError
from ..settings import DEFAULT_REDIRECT_PATH
from .client import DeviceAuthorization, OIDCClient
from .tokens import TokenSet

logger = logging.getLogger(__name__)

LOOPBACK_PATH = DEFAULT_REDIRECT_PATH
SLOW_DOWN_STEP = 5.0  # RFC 8628 section 3.5

DevicePrompt = Callable[[DeviceAuthorization], None]
#: Called with the authorization URL and whether a browser was opened for it.
UrlPrompt = Callable[[str, bool], None]


def device_login(
    client: OIDCClient,
    on_prompt: DevicePrompt,
    *,
    cancel: threading.Event | None = None,
) -> TokenSet:
    """RFC 8628: show the code via `on_prompt`, poll until approved; stop at the first success."""
    cancel = cancel or threading.Event()
    device = client.start_device_authorization()
    on_prompt(device)
    interval = device.interval
    while True:
        if cancel.wait(interval):
            raise LoginFailed("Sign-in was cancelled.", error="cancelled")
        if time.time() >= device.expires_at:
            raise LoginFailed("The code expired before sign-in finished; start again.", error="expired_token")
        try:
            # One success only: oidc-provider revokes the issued tokens when a device code is polled again.
            return client.poll_device_token(device)
        except ProviderError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if exc.error == "expired_token":
                raise LoginFailed("The code expired before sign-in finished; start again.", error=exc.error) from None
            if exc.error == "access_denied":
                raise LoginFailed("Sign-in was denied at the identity provider.", error=exc.error) from None
            if exc.transient:
                logger.info("Device flow poll failed (%s); polling on", exc.error)
                continue
            raise


def browser_login(
    client: OIDCClient,
    *,
    on_url: UrlPrompt | None = None,
    open_browser: bool = True,
    timeout: float = 300.0,
    cancel: threading.Event | None = None,
    redirect_path: str = LOOPBACK_PATH,
) -> TokenSet:
    """Auth code + PKCE with a one-shot redirect listener on 127.0.0.1 (RFC 8252), random port."""
    with LoopbackRedirect(redirect_path) as loopback:
        pending = client.authorization_request(loopback.redirect_uri)
        loopback.expect(pending.state)
        check_redirect_accepted(client, pending.url, loopback.redirect_uri)
        opened = _open(pending.url) if open_browser else False
        if on_url is not None:
            on_url(pending.url, opened)
        callback_url = loopback.wait(timeout=timeout, cancel=cancel)
    return client.exchange_code(pending, callback_url)


def check_redirect_accepted(client: OIDCClient, url: str, redirect_uri: str) -> None:
    """Ask the provider for the authorization page first: a refused redirect URI fails now, not after a timeout.

    A provider shows an unregistered redirect URI as an error page in the browser and never redirects back,
    so without this check the listener would wait out its whole timeout. No cookies go along: nobody signs in here.
    """
    try:
        response = requests.get(
            url, allow_redirects=False, timeout=client.settings.timeout, verify=client.settings.verify
        )
    except requests.RequestException:
        return  # the browser may still get through (e.g. a proxy only it knows); let the sign-in proceed
    if response.status_code < 400:
        return
    parts = urlsplit(redirect_uri)
    register = f"{parts.scheme}://{parts.hostname}{parts.path}"
    if "redirect" in response.text.lower():
        raise LoginFailed(
            f"The identity provider refused the redirect URI {redirect_uri}: register {register} (any port) "
            f"for client {client.settings.client_id}, or set redirect_path (MLFLOW_OIDC_REDIRECT_PATH, "
            f"--redirect-path) to the loopback path it has.",
            error="invalid_redirect_uri",
        )
    raise LoginFailed(
        f"The identity provider refused the sign-in request (HTTP {response.status_code}) for client "
        f"{client.settings.client_id} with redirect URI {redirect_uri}: check the client's settings there.",
        error="invalid_request",
    )


def _open(url: str) -> bool:
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False


class LoopbackRedirect:
    """A tiny HTTP server on 127.0.0.1:<random> that waits for the provider's redirect carrying our state."""

    def __init__(self, path: str = LOOPBACK_PATH) -> None:
        self.path = path if path.startswith("/") else f"/{path}"
        self._callback: str | None = None
        self._expected_state: str | None = None
        self._received = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="oidc-loopback", daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> LoopbackRedirect:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def expect(self, state: str) -> None:
        """Accept only the redirect carrying `state` (call before sending the user to the provider)."""
        self._expected_state = state

    def wait(self, *, timeout: float, cancel: threading.Event | None = None) -> str:
        """Block until the redirect arrived; returns its full URL."""
        deadline = time.monotonic() + timeout
        while not self._received.wait(0.2):
            if cancel is not None and cancel.is_set():
                raise LoginFailed("Sign-in was cancelled.", error="cancelled")
            if time.monotonic() > deadline:
                raise LoginFailed(f"No sign-in arrived within {timeout:.0f} s; start again.", error="timeout")
        assert self._callback is not None
        return self._callback

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                state = parse_qs(parts.query).get("state", [""])[0]
                # Only the redirect carrying our state ends the wait; stray requests cannot.
                if parts.path != outer.path or not outer._expected_state or state != outer._expected_state:
                    self._reply(404, "This is not the sign-in you are waiting for.")
                    return
                if outer._received.is_set():
                    self._reply(200, "Sign-in already received; you can close this tab.")
                    return
                outer._callback = f"{outer.redirect_uri}?{parts.query}"
                outer._received.set()
                failed = "error" in parse_qs(parts.query)
                self._reply(
                    200,
                    "Sign-in failed; see your notebook or terminal."
                    if failed
                    else "Signed in. You can close this tab and return to your notebook or terminal.",
                )

            def _reply(self, status: int, text: str) -> None:
                body = f"<!doctype html><title>MLflow sign-in</title><p>{text}</p>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # the request line carries the authorization code: keep it out of logs

        return Handler
