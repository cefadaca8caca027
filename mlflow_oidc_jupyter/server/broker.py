"""The kernel broker: kernels of this server get the server session's access token, so only the server refreshes.

The contract (env vars, the secret header, paths, answers) is `mlflow_oidc_jupyter/broker_contract.py`; the
kernel side is `oidc/broker.py`'s `BrokerSession`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import MutableMapping
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated

from ..broker_contract import BROKER_PATH, SECRET_ENV, SECRET_HEADER, UI_URL_ENV, URL_ENV, ui_url
from ..errors import LoginRequired, OIDCError
from ..settings import ENV_VARS
from .handlers import MLflowHandler


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
    return f"{scheme}://{host}:{app.port}{ext.public_path(BROKER_PATH)}"


def export_environment(ext: Any, environ: MutableMapping[str, str]) -> None:
    """Hand kernels started from now on the broker's address and secret, and where MLflow and the IdP are."""
    url = local_url(ext)
    if url is None:
        ext.log.warning("MLflow kernel broker off: the server listens on a Unix socket only.")
        return
    environ[URL_ENV] = url
    environ[SECRET_ENV] = ext.broker_secret
    environ[UI_URL_ENV] = ui_url(url)
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
