"""What crosses the proxy: request and response headers, the query string, redirects and the UI's new-tab links."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
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
    # What proxies say about the client is ours to say (forwarded_headers): a browser's own claims never pass,
    # nor headers some frameworks read as the request's real path or method.
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
}
#: Every header with one of these prefixes is dropped too (X-Forwarded-For/-Host/-Proto/-Port/-Prefix/-User...).
REQUEST_DROPPED_PREFIXES = ("x-forwarded-", "x-original-")
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
        if lowered in REQUEST_DROPPED or lowered.startswith(REQUEST_DROPPED_PREFIXES) or lowered in connection_listed:
            continue
        outgoing.add(name, value)
    outgoing["Authorization"] = f"Bearer {token}"
    return outgoing


def forwarded_headers(*, proto: str, host: str, client_ip: str, prefix: str) -> dict[str, str]:
    """What this proxy tells upstream about the browser's request; `prefix` is where the UI is served (no `/`).

    Servers that build links from them (mlflow-oidc-auth uses X-Forwarded-Prefix) get ours, never the browser's.
    """
    return {
        "X-Forwarded-Proto": proto,
        "X-Forwarded-Host": host,
        "X-Forwarded-For": client_ip,
        "X-Forwarded-Prefix": prefix.rstrip("/"),
    }


def upstream_path(raw: str) -> str:
    """The path to request upstream: refused (ValueError) when a segment is `.` or `..` in any decoding.

    Behind a path-routing gateway, `../` would climb out of the tracking server's prefix carrying the user's token.
    """
    decoded = raw
    for _ in range(5):
        segments = decoded.replace("\\", "/").split("/")
        if any(segment in (".", "..") for segment in segments):
            raise ValueError("the path has . or .. segments")
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise ValueError("the path is percent-encoded too many times")
    return raw


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


def rewriter(path: str) -> Callable[[bytes], bytes] | None:
    """How to rewrite the body of a successful response to `path` before the browser sees it, if at all."""
    if is_ui_script(path):
        return rewrite_ui_script
    if path == OIDC_AUTH_UI_CONFIG:
        return mark_signed_in
    return None


#: mlflow-oidc-auth's admin UI asks this whether the browser is signed in (see `mark_signed_in`).
OIDC_AUTH_UI_CONFIG = "oidc/ui/config.json"


def mark_signed_in(body: bytes) -> bytes:
    """Tell mlflow-oidc-auth's admin UI that the browser is signed in: through us, every request is.

    Its `authenticated` flag counts only its own session cookie (11.0.2), never the bearer token we send, so
    without this its UI shows its own login page although every API call it makes would be accepted.
    """
    try:
        config = json.loads(body)
    except ValueError:
        return body
    if not isinstance(config, dict) or "authenticated" not in config:
        return body
    return json.dumps({**config, "authenticated": True}).encode()


def is_ui_script(path: str) -> bool:
    """The MLflow UI's JavaScript bundles, whose new-tab links we rewrite."""
    return path.startswith("static-files/static/js/") and path.endswith(".js")


def rewrite_ui_script(body: bytes) -> bytes:
    return _ROOT_HASH_LINK.sub(b"`./#", body)
