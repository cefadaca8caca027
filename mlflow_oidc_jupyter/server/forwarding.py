"""What crosses the proxy: request and response headers, the query string, redirects and the UI's new-tab links."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urljoin, urlsplit

from tornado.httputil import HTTPHeaders

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Jupyter's credentials and the browser's provenance stay here; upstream gets the server session's bearer token.
REQUEST_DROPPED = HOP_BY_HOP | {
    "host",
    "cookie",
    "authorization",
    "origin",
    "referer",
    "x-xsrftoken",
    "x-csrftoken",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-user",
    "x-forwarded-roles",
}
#: Upstream cookies would land on the Jupyter origin; Server/Date are the Jupyter server's own.
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "server", "date"}
#: Query parameters that are Jupyter's, never the tracking server's.
QUERY_DROPPED = frozenset({"token", "_xsrf"})

#: The MLflow UI opens a few pages in a new tab at `/#...` (the origin's root); under a prefix that must be `./#`.
_ROOT_HASH_LINK = re.compile(rb"`/#")


def request_headers(incoming: HTTPHeaders, token: str) -> HTTPHeaders:
    """Headers for the upstream request: the client's own, minus credentials and provenance, plus the bearer."""
    connection_listed = {h.strip().lower() for h in incoming.get("Connection", "").split(",") if h.strip()}
    outgoing = HTTPHeaders()
    for name, value in incoming.get_all():
        lowered = name.lower()
        if lowered in REQUEST_DROPPED or lowered in connection_listed:
            continue
        outgoing.add(name, value)
    outgoing["Authorization"] = f"Bearer {token}"
    return outgoing


def response_headers(upstream: HTTPHeaders) -> Iterable[tuple[str, str]]:
    """Upstream response headers that the browser may see (Location is handled by `rewrite_location`)."""
    connection_listed = {h.strip().lower() for h in upstream.get("Connection", "").split(",") if h.strip()}
    for name, value in upstream.get_all():
        lowered = name.lower()
        if lowered in RESPONSE_DROPPED or lowered in connection_listed:
            continue
        yield name, value


def query_string(raw: str) -> str:
    """The raw query without Jupyter's parameters; everything else byte for byte as the browser sent it."""
    kept = [part for part in raw.split("&") if part and unquote(part.split("=", 1)[0]) not in QUERY_DROPPED]
    return "&".join(kept)


def rewrite_location(location: str, upstream: str, public_prefix: str) -> str:
    """Map a redirect to the tracking server back under our prefix; leave redirects elsewhere alone.

    `upstream` is the tracking server's base URL (no trailing slash), `public_prefix` our path ending in `/`.
    """
    up = urlsplit(upstream + "/")
    target = urlsplit(urljoin(upstream + "/", location))
    relative = not urlsplit(location).netloc and not location.startswith("/")
    if relative or (target.scheme, target.netloc) != (up.scheme, up.netloc) or not target.path.startswith(up.path):
        return location
    rest = target.path[len(up.path) :]
    return (
        public_prefix
        + rest
        + (f"?{target.query}" if target.query else "")
        + (f"#{target.fragment}" if target.fragment else "")
    )


def is_ui_script(path: str) -> bool:
    """The MLflow UI's JavaScript bundles, whose new-tab links we rewrite."""
    return path.startswith("static-files/static/js/") and path.endswith(".js")


def rewrite_ui_script(body: bytes) -> bytes:
    return _ROOT_HASH_LINK.sub(b"`./#", body)
