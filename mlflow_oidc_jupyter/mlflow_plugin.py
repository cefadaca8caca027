"""MLflow entry points: `MLFLOW_TRACKING_AUTH=oidc` request auth, and run tags naming the verified user."""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

import requests
from mlflow.tracking.context.abstract_context import RunContextProvider
from mlflow.tracking.request_auth.abstract_request_auth_provider import RequestAuthProvider

from .errors import AccessDenied, LoginRequired, OIDCError
from .oidc.default import DefaultSession, find_default_session, get_default_session, peek_default_session

logger = logging.getLogger(__name__)

_RETRIED = "_mlflow_oidc_retried"
_BODY_POS = "_mlflow_oidc_body_pos"


def origin(url: str) -> str | None:
    """scheme://host:port with the default port made explicit; None for non-HTTP URIs."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host.lower()}:{port}"


def tracking_origins(session: DefaultSession | None = None) -> set[str]:
    """Origins that may receive the token: MLflow's tracking and registry URIs and the configured one."""
    import mlflow

    uris = [mlflow.get_tracking_uri(), mlflow.get_registry_uri(), os.environ.get("MLFLOW_TRACKING_URI")]
    if session is not None:
        uris.append(session.settings.tracking_uri)
    return {o for o in (origin(u) for u in uris if u) if o}


class OIDCBearerAuth(requests.auth.AuthBase):
    """Adds the session's bearer token to requests for the tracking server, and only to those.

    On a 401 it refreshes once and resends when the body can be replayed; redirects away from the
    tracking server (to a sign-in page), HTML error pages and 403s become errors that say what to do.
    """

    def __init__(self, session: DefaultSession | None = None) -> None:
        self._session = session

    def session(self) -> DefaultSession:
        """The given session, else the process default (looked up per request: a kernel may switch it)."""
        return self._session if self._session is not None else get_default_session()

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        session = self.session()
        if origin(request.url or "") not in tracking_origins(session):
            return request  # never send the token anywhere else (presigned storage URLs, redirects...)
        request.headers["Authorization"] = f"Bearer {session.access_token()}"
        body: Any = request.body
        if hasattr(body, "seek") and hasattr(body, "tell"):
            setattr(request, _BODY_POS, body.tell())
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.status_code == 401 and not getattr(request, _RETRIED, False) and _replayable(request):
            sent = str(request.headers.get("Authorization") or "").removeprefix("Bearer ")
            token = self.session().token_rejected(sent)
            response.content  # noqa: B018 - drain so the connection can be reused
            response.close()
            retry = request.copy()
            retry.headers["Authorization"] = f"Bearer {token}"
            if hasattr(retry.body, "seek") and getattr(request, _BODY_POS, None) is not None:
                retry.body.seek(getattr(request, _BODY_POS))  # type: ignore[union-attr]
            setattr(retry, _RETRIED, True)
            logger.info("Tracking server answered 401; resending once with a refreshed token")
            again = response.connection.send(retry, **kwargs)  # type: ignore[attr-defined]
            again.history.append(response)
            again.request = retry
            response = again
        _raise_for_sign_in_trouble(response, self.session())
        return response


def _replayable(request: requests.PreparedRequest) -> bool:
    body = request.body
    return body is None or isinstance(body, (bytes, str)) or getattr(request, _BODY_POS, None) is not None


def _raise_for_sign_in_trouble(response: requests.Response, session: DefaultSession) -> None:
    """Turn what MLflow would report as 'not valid JSON' or a bare 401/403 into an error that says what to do."""
    status = response.status_code
    server = origin(response.url) or response.url
    if response.is_redirect:
        target = origin(requests.compat.urljoin(response.url, response.headers.get("Location", "")))
        if target != origin(response.url):
            raise LoginRequired(
                f"The tracking server {server} redirected to {target} (a sign-in page?) instead of accepting "
                "the token: is MLFLOW_TRACKING_URI the API address of the proxy, and is the session valid?"
            )
        return
    if status == 401:
        raise LoginRequired(f"The tracking server {server} did not accept your sign-in ({_reason(response)}).")
    if status == 403 and not _is_json(response):
        user = session.identity.username if session.identity else "you"
        path = urlsplit(response.url).path
        raise AccessDenied(
            f"The tracking server refused {response.request.method} {path} for {user} ({_reason(response)}). "
            "Ask an MLflow admin for the role you need."
        )
    if status == 200 and "/api/" in urlsplit(response.url).path and _is_html(response):
        raise OIDCError(
            f"The tracking server {server} answered an API call with an HTML page (a sign-in page?): "
            "check MLFLOW_TRACKING_URI and that the proxy accepts bearer tokens."
        )


def _reason(response: requests.Response) -> str:
    reason = response.headers.get("X-Auth-Error")
    if not reason and _is_json(response):
        try:
            reason = str(response.json().get("message") or "")
        except (ValueError, AttributeError):
            reason = None
    if not reason:
        challenge = response.headers.get("WWW-Authenticate", "")
        if "error_description=" in challenge:
            reason = challenge.split("error_description=", 1)[1].split('"')[1]
    return f"HTTP {response.status_code}: {reason}" if reason else f"HTTP {response.status_code}"


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
