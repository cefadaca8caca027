"""The base of every handler of the extension: the extension app, JSON or page answers, our URLs."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from jupyter_server.base.handlers import JupyterHandler
from tornado import httputil

from . import pages


def is_navigation(request: httputil.HTTPServerRequest) -> bool:
    """A page load in the browser (not the UI's own fetch): errors become readable pages instead of JSON."""
    mode = request.headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate"
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


class MLflowHandler(JupyterHandler):
    """Shared parts of our handlers: the extension app, JSON or page answers, our URLs."""

    #: Handlers that only browsers visit answer errors with pages, whatever the request looks like.
    pages_only = False

    def initialize(self, ext: Any) -> None:
        self.ext = ext

    def compute_etag(self) -> str | None:
        return None  # upstream's validators (or none) are the truth, not a hash of what we buffered

    def login_url(self, next_path: str | None = None) -> str:
        url = self.ext.public_path("oauth", "login")
        return f"{url}?next={quote(next_path, safe='')}" if next_path else url

    def remember_browser(self) -> None:
        """Note where the user's browser reaches this server: kernels print links to the UI with this origin."""
        self.ext.browser_origin = f"{self.request.protocol}://{self.request.host}"

    def answer(self, status: int, html: str | None, *, code: str, message: str) -> None:
        """A page for people, MLflow-style JSON for the UI's fetches and for scripts."""
        self.clear()
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        if html is not None and (self.pages_only or is_navigation(self.request)):
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.finish(html)
        else:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error_code": code, "message": message}))

    def require_configured(self) -> Any:
        """The server's session, or None after answering that the extension lacks settings."""
        if self.ext.session is None:
            self.answer(
                503,
                pages.not_configured(self.ext.config_problem or ""),
                code="TEMPORARILY_UNAVAILABLE",
                message=f"MLflow UI not configured: {self.ext.config_problem}",
            )
            return None
        return self.ext.session
