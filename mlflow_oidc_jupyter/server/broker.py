"""The kernel broker: kernels of this server get the server session's access token, so only the server refreshes.

Contract (the kernel side lives in the MLflow plugin / magics):

- The server exports, before any kernel starts, ``MLFLOW_OIDC_BROKER_URL`` (loopback URL of this endpoint) and
  ``MLFLOW_OIDC_BROKER_SECRET`` (random per server start). Kernels inherit both.
- ``GET $MLFLOW_OIDC_BROKER_URL`` with header ``X-MLflow-OIDC-Broker: $MLFLOW_OIDC_BROKER_SECRET``:
  200 ``{"access_token", "token_type": "Bearer", "expires_at": <epoch s>, "identity": {...}}`` — a token valid for
  at least the session's refresh margin; 401 ``{"error": "login_required", "message", "login_url"}`` when the
  server is signed out (``login_url`` is a path on the Jupyter server: open it in the browser that shows
  JupyterLab); 403 ``{"error": "forbidden"}`` for a wrong secret; 503 ``{"error": "not_configured"}``.
- ``?rejected=<sha256 hex of a token the tracking server answered 401 to>``: the server refreshes once unless it
  already replaced that token, and answers with the new one.
- Every answer also carries the session's state (no token): ``version``, ``state``, ``signed_in``, ``identity``,
  ``access_expires_at``, ``refresh_expires_at``, ``issued_at``, ``refresh_count``, ``message``, and ``ui_url`` (the
  MLflow UI as the user's browser last reached it: links printed in notebooks).
- ``?peek=1&since=<version>&wait=<seconds>``: only the state, answered once it differs from ``version`` (a long
  poll): how kernels learn at once that the server signed in or out.
- ``DELETE``: sign the server out (refresh token revoked): the MLflow UI and every kernel using it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import MutableMapping
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated

from ..errors import LoginRequired, OIDCError
from ..settings import ENV_VARS
from .handlers import MLflowHandler

URL_ENV = "MLFLOW_OIDC_BROKER_URL"
SECRET_ENV = "MLFLOW_OIDC_BROKER_SECRET"  # noqa: S105 - the name of the variable, not a secret
SECRET_HEADER = "X-MLflow-OIDC-Broker"  # noqa: S105 - a header name
#: The MLflow UI's absolute URL as this server knows it at start (kernels print run links to it).
UI_URL_ENV = "MLFLOW_OIDC_UI_URL"


def local_url(ext: Any) -> str | None:
    """How a kernel on this machine reaches this server (None when it listens on a Unix socket only)."""
    app = ext.serverapp
    if getattr(app, "sock", ""):
        return None
    ip = app.ip or "127.0.0.1"
    if ip in ("0.0.0.0", "*", "localhost"):  # noqa: S104 - mapping a wildcard bind to loopback
        ip = "127.0.0.1"
    elif ip == "::":
        ip = "::1"
    host = f"[{ip}]" if ":" in ip else ip
    scheme = "https" if app.certfile else "http"
    return f"{scheme}://{host}:{app.port}{ext.public_path('oauth', 'broker')}"


def export_environment(ext: Any, environ: MutableMapping[str, str]) -> None:
    """Hand kernels started from now on the broker's address and secret, and where MLflow and the IdP are."""
    url = local_url(ext)
    if url is None:
        ext.log.warning("MLflow kernel broker off: the server listens on a Unix socket only.")
        return
    environ[URL_ENV] = url
    environ[SECRET_ENV] = ext.broker_secret
    environ[UI_URL_ENV] = url[: -len("oauth/broker")]
    settings = ext.oidc_settings
    # Defaults only: a kernel-side setting the user chose wins.
    environ.setdefault(ENV_VARS["issuer"], settings.issuer)
    environ.setdefault(ENV_VARS["client_id"], settings.client_id)
    environ.setdefault(ENV_VARS["tracking_uri"], settings.tracking_uri)
    ext.log.info("MLflow kernel broker at %s", url)


class BrokerHandler(MLflowHandler):
    """Answers kernels of this server (who present the secret) with the session's current access token."""

    def check_xsrf_cookie(self) -> None:
        return None  # GET only, and authenticated by a header a browser page cannot set cross-site

    def _authorized(self) -> bool:
        presented = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(presented.encode(), self.ext.broker_secret.encode()):
            self._reply(403, {"error": "forbidden", "message": "Wrong or missing broker secret."})
            return False
        if self.ext.session is None:
            self._reply(503, {"error": "not_configured", "message": self.ext.config_problem})
            return False
        return True

    @allow_unauthenticated  # kernels have no Jupyter credentials; the broker secret authenticates them
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        if not self._authorized():
            return
        session = self.ext.session
        if self.get_argument("peek", ""):
            try:
                since, wait = int(self.get_argument("since", "0")), float(self.get_argument("wait", "0"))
            except ValueError:
                self._reply(400, {"error": "bad_request", "message": "since and wait must be numbers"})
                return
            await self.ext.feed.wait(since, wait)
            self._reply(200, self._state())
            return
        rejected = self.get_argument("rejected", "")
        try:
            token = await asyncio.to_thread(session.access_token)
            if rejected and hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), rejected):
                token = await asyncio.to_thread(session.token_rejected, token)
        except LoginRequired as exc:
            login_url = self.login_url(self.ext.public_path("oauth", "status"))
            self._reply(
                401, {"error": "login_required", "message": exc.reason, "login_url": login_url, **self._state()}
            )
            return
        except OIDCError as exc:
            self._reply(502, {"error": "refresh_failed", "message": str(exc), **self._state()})
            return
        self._reply(200, {**self._state(), "access_token": token, "token_type": "Bearer"})

    @allow_unauthenticated
    async def delete(self) -> None:
        """`%mlflow_logout --server`: sign the server out, for the UI and every kernel using its session."""
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        if not self._authorized():
            return
        try:
            await asyncio.to_thread(self.ext.session.logout)
        except OIDCError as exc:
            self.log.warning("MLflow: sign-out at the provider failed: %s", exc)
        self.log.info("MLflow UI: signed out by a kernel")
        self._reply(200, {"signed_out": True, **self._state()})

    def _state(self) -> dict[str, Any]:
        snapshot = self.ext.session.snapshot()
        identity = snapshot.identity
        origin = self.ext.browser_origin
        return {
            "version": self.ext.feed.version,
            "state": snapshot.state.value,
            "signed_in": identity is not None,
            "identity": identity.to_dict() if identity else None,
            "expires_at": snapshot.access_expires_at,
            "access_expires_at": snapshot.access_expires_at,
            "refresh_expires_at": snapshot.refresh_expires_at,
            "issued_at": snapshot.issued_at,
            "refresh_count": snapshot.refresh_count,
            "message": snapshot.message,
            "ui_url": origin + self.ext.ui_path if origin else None,
        }

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))
