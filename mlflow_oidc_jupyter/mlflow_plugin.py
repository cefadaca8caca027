"""MLflow entry points: `MLFLOW_TRACKING_AUTH=oidc` request auth, and run tags naming the verified user."""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
from mlflow.tracking.context.abstract_context import RunContextProvider
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from .errors import LoginRequired, OIDCError
from .oidc.default import DefaultSession, find_default_session, get_default_session, peek_default_session
from .oidc.tokens import issued_at_hint

logger = logging.getLogger(__name__)

_BODY_POS = "_mlflow_oidc_body_pos"


@functools.lru_cache(maxsize=256)
def origin(url: str) -> str | None:
    """scheme://host:port with the default port made explicit; None for non-HTTP URIs (cached: per request)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host.lower()}:{port}"


def _token_uris(session: DefaultSession) -> Iterator[str | None]:
    """URIs whose origin may receive the token: MLflow's tracking URI, the configured ones, and last MLflow's
    registry URI, which costs a failed `import pyspark` (a search of sys.path) on every call and is rarely needed."""
    import mlflow

    yield mlflow.get_tracking_uri()
    yield os.environ.get("MLFLOW_TRACKING_URI")
    yield session.settings.tracking_uri
    yield mlflow.get_registry_uri()


def may_receive_token(url: str, session: DefaultSession) -> bool:
    """Whether `url` is on the origin of one of the `_token_uris` (read lazily: most calls stop at the first)."""
    target = origin(url)
    return target is not None and any(uri and origin(uri) == target for uri in _token_uris(session))


class OIDCBearerAuth(requests.auth.AuthBase):
    """Adds the session's bearer token to requests for the tracking server, and only to those.

    On a 401 it asks the session for a token to send again (refreshed, or the same one a moment later for a server
    whose clock is behind) and resends while the body can be replayed; redirects away from the tracking server
    (to a sign-in page), HTML error pages, 401s and 403s become errors that name the server's reason.
    """

    def __init__(self, session: DefaultSession | None = None) -> None:
        self._session = session

    def session(self) -> DefaultSession:
        """The given session, else the process default (looked up per request: a kernel may switch it)."""
        return self._session if self._session is not None else get_default_session()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        session = self.session()
        if not may_receive_token(request.url or "", session):
            return request  # never send the token anywhere else (presigned storage URLs, redirects...)
        request.headers["Authorization"] = f"Bearer {session.access_token()}"
        body: Any = request.body
        if hasattr(body, "seek") and hasattr(body, "tell"):
            setattr(request, _BODY_POS, body.tell())
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        session = self.session()
        replayable = _replayable(response.request)
        if response.status_code == 401:
            if replayable:
                response = self._resend_while_refused(response, session, **kwargs)
            else:
                session.token_rejected(_bearer(response.request))  # a better token for the next request
        _explain_refusal(response, session, replayable=replayable)
        return response

    def _resend_while_refused(
        self, response: requests.Response, session: DefaultSession, **kwargs: Any
    ) -> requests.Response:
        """Resend with whatever token the session offers: a refreshed one, or the same once it is a bit older."""
        pauses = iter(SKEW_PAUSES)
        tried: set[str] = set()
        while response.status_code == 401 and len(tried) < MAX_TOKENS_TRIED:
            sent = _bearer(response.request)
            tried.add(sent)
            token = session.token_rejected(sent)
            if token == sent:
                # Refreshing cannot help now. A server whose clock is behind the provider's refuses a brand-new
                # token until its `iat` has passed on that clock: give it a moment, then stop.
                issued = issued_at_hint(sent)
                age = None if issued is None else time.time() - issued
                if age is None or age >= SERVER_SKEW_ALLOWANCE:
                    break
                time.sleep(min(next(pauses, SKEW_PAUSES[-1]), SERVER_SKEW_ALLOWANCE - age))
            response = _send_again(response, token, **kwargs)
        return response


#: A server whose clock runs up to this many seconds behind the provider's still gets every call through.
SERVER_SKEW_ALLOWANCE = 5.0
SKEW_PAUSES = (0.25, 0.5, 1.0)
#: Tokens one request may try before its 401 is final (the first, a refreshed one, one renewed meanwhile).
MAX_TOKENS_TRIED = 3


def _bearer(request: requests.PreparedRequest) -> str:
    return str(request.headers.get("Authorization") or "").removeprefix("Bearer ")


def _send_again(response: requests.Response, token: str, **kwargs: Any) -> requests.Response:
    request = response.request
    response.content  # noqa: B018 - drain so the connection can be reused
    response.close()
    retry = request.copy()
    retry.headers["Authorization"] = f"Bearer {token}"
    if hasattr(retry.body, "seek") and getattr(request, _BODY_POS, None) is not None:
        retry.body.seek(getattr(request, _BODY_POS))  # type: ignore[union-attr]
        setattr(retry, _BODY_POS, getattr(request, _BODY_POS))
    logger.info("Tracking server answered 401; sending the request again")
    again = response.connection.send(retry, **kwargs)  # type: ignore[attr-defined]
    again.history = [*response.history, response]
    again.request = retry
    return again


def _replayable(request: requests.PreparedRequest) -> bool:
    body = request.body
    return body is None or isinstance(body, (bytes, str)) or getattr(request, _BODY_POS, None) is not None


def _explain_refusal(response: requests.Response, session: DefaultSession, *, replayable: bool) -> None:
    """Make what MLflow would report as 'not valid JSON', INTERNAL_ERROR or a bare 401/403 name the server's
    reason and who can fix it: refusals become MLflow-shaped errors (UNAUTHENTICATED, PERMISSION_DENIED)."""
    status = response.status_code
    if status == 200 and not _is_html(response):
        return  # the common case, decided without parsing anything
    server = origin(response.url) or response.url
    user = session.identity.username if session.identity else "you"
    if response.is_redirect:
        target = origin(requests.compat.urljoin(response.url, response.headers.get("Location", "")))
        if target != origin(response.url):
            raise LoginRequired(
                f"The tracking server {server} redirected to {target} (a sign-in page?) instead of accepting "
                "the token: is MLFLOW_TRACKING_URI the API address of the proxy, and is the session valid?"
            )
        return
    if status == 401:
        if replayable:
            message = (
                f"The tracking server {server} refused a valid token of {user} ({_reason(response)}), also when "
                f"sent again: the server does not know this user, or does not trust the identity provider "
                f"{session.settings.issuer}. Signing in again will not help: ask the server's admin to let "
                f"{user} in."
            )
        else:
            message = (
                f"The tracking server {server} refused {user}'s token ({_reason(response)}); the request could not "
                "be sent again with a new one (its body was streamed): try again."
            )
        _as_mlflow_error(response, "UNAUTHENTICATED", message)
    elif status == 403 and not _json_field(response, "error_code"):
        path = urlsplit(response.url).path
        _as_mlflow_error(
            response,
            "PERMISSION_DENIED",
            f"The tracking server refused {response.request.method} {path} for {user} ({_reason(response)}). "
            "Ask an MLflow admin for the permission you need.",
        )
    elif status == 200 and "/api/" in urlsplit(response.url).path and _is_html(response):
        raise OIDCError(
            f"The tracking server {server} answered an API call with an HTML page (a sign-in page?): "
            "check MLFLOW_TRACKING_URI and that the proxy accepts bearer tokens."
        )


def _as_mlflow_error(response: requests.Response, error_code: str, message: str) -> None:
    """Replace the body of a refusal with MLflow's error shape, so MLflow raises it with this code and message."""
    logger.info("%s", message)
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    response._content = body  # as MLflow's own rest_utils does
    response.encoding = "utf-8"
    response.headers["Content-Type"] = "application/json"
    response.headers["Content-Length"] = str(len(body))


def _reason(response: requests.Response) -> str:
    """The server's own words: X-Auth-Error, a JSON `message`/`detail`/`error_description`, or the challenge."""
    reason = response.headers.get("X-Auth-Error")
    if not reason and _is_json(response):
        for name in ("message", "detail", "error_description", "error"):
            reason = _json_field(response, name)
            if reason:
                break
    if not reason:
        challenge = response.headers.get("WWW-Authenticate", "")
        if "error_description=" in challenge:
            reason = challenge.split("error_description=", 1)[1].split('"')[1]
    return f"HTTP {response.status_code}: {reason}" if reason else f"HTTP {response.status_code}"


def _json_field(response: requests.Response, name: str) -> str | None:
    try:
        value = response.json().get(name)
    except (ValueError, AttributeError):
        return None
    return str(value)[:300] if value else None


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "")


def _is_html(response: requests.Response) -> bool:
    return "text/html" in response.headers.get("Content-Type", "")


class OIDCAuthProvider(RequestAuthProvider):
    """`MLFLOW_TRACKING_AUTH=oidc`: MLflow calls `get_auth()` for every request."""

    def get_name(self) -> str:
        return "oidc"

    def get_auth(self) -> OIDCBearerAuth:
        return OIDCBearerAuth()


def _current_session() -> DefaultSession | None:
    session = peek_default_session()
    if session is None and os.environ.get("MLFLOW_TRACKING_AUTH") == "oidc":
        session = find_default_session()
    return session


class OIDCRunContextProvider(RunContextProvider):
    """Tags new runs with the verified identity: mlflow.user, oidc.sub, oidc.issuer."""

    def in_context(self) -> bool:
        try:
            session = _current_session()
            return session is not None and session.identity is not None
        except Exception:  # a run must never fail because tagging could not decide
            logger.debug("OIDC run context unavailable", exc_info=True)
            return False

    def tags(self) -> dict[str, str]:
        session = _current_session()
        identity = session.identity if session else None
        if identity is None:
            return {}
        return {"mlflow.user": identity.username, "oidc.sub": identity.subject, "oidc.issuer": identity.issuer}
