"""The kernel broker's server side: kernels of this server get its session's token (contract: broker_contract.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import MutableMapping
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated

from ..broker_contract import BROKER_PATH, REJECTED_PARAM, SECRET_ENV, SECRET_HEADER, URL_ENV, token_digest
from ..errors import LoginRequired, OIDCError
from ..oidc.remote import token_answer
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
    return f"{scheme}://{host}:{app.port}{ext.public_path(*BROKER_PATH)}"


def export_environment(ext: Any, environ: MutableMapping[str, str]) -> None:
    """Hand kernels started from now on the broker's address and secret, and where MLflow and the IdP are."""
    url = local_url(ext)
    if url is None:
        ext.log.warning("MLflow kernel broker off: the server listens on a Unix socket only.")
        return
    environ[URL_ENV] = url
    environ[SECRET_ENV] = ext.broker_secret
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

    @allow_unauthenticated  # kernels have no Jupyter credentials; the broker secret authenticates them
    async def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        presented = self.request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(presented.encode(), self.ext.broker_secret.encode()):
            self._reply(403, {"error": "forbidden", "message": "Wrong or missing broker secret."})
            return
        session = self.ext.session
        if session is None:
            self._reply(503, {"error": "not_configured", "message": self.ext.config_problem})
            return
        rejected = self.get_argument(REJECTED_PARAM, "")
        try:
            token = await asyncio.to_thread(session.access_token)
            if rejected and hmac.compare_digest(token_digest(token), rejected):
                token = await asyncio.to_thread(session.token_rejected, token)
        except LoginRequired as exc:
            login_url = self.login_url(self.ext.public_path("oauth", "status"))
            self._reply(401, {"error": "login_required", "message": exc.reason, "login_url": login_url})
            return
        except OIDCError as exc:
            self._reply(502, {"error": "refresh_failed", "message": str(exc)})
            return
        snapshot = session.snapshot()
        self._reply(200, token_answer(token, snapshot.access_expires_at, snapshot.identity))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))
