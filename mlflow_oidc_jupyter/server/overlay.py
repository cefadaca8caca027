"""The MLflow UI's identity overlay: a script tag added to the UI's index.html, and the handler serving it."""

from __future__ import annotations

from importlib import resources

from tornado import web

from .handlers import MLflowHandler

#: Route of the script under the UI's path (our `oauth/` namespace, never an MLflow route).
SCRIPT_ROUTE = "oauth/ui-overlay.js"
#: The UI's HTML entry points: the root and index.html (the UI routes by fragment, so no other page exists).
INDEX_PATHS = ("", "index.html")


def is_ui_index(path: str) -> bool:
    """Whether a proxied path (relative to the UI's root) is the UI's index page."""
    return path in INDEX_PATHS


def inject(page: bytes, script_url: str) -> bytes:
    """`page` with our script loaded at the end of its head (an external same-origin script: CSP unchanged)."""
    tag = f'<script src="{script_url}" defer></script>'.encode()
    head_end = page.lower().find(b"</head>")
    if head_end < 0:
        return page + tag
    return page[:head_end] + tag + page[head_end:]


def script() -> bytes:
    return resources.files(__package__).joinpath("static").joinpath("ui-overlay.js").read_bytes()


class OverlayScriptHandler(MLflowHandler):
    """Serves the overlay script to signed-in Jupyter users (it holds nothing secret, but lives under our path)."""

    @web.authenticated
    def get(self) -> None:
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(script())
