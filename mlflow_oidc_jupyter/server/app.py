"""The extension app: configuration (traitlets), the server-side session, handlers under `{base_url}{prefix}/`."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any
from urllib.parse import quote

from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Bool, Float, List, Unicode

from ..broker_contract import BROKER_PATH, DEFAULT_PREFIX
from ..errors import ConfigError, OIDCError
from ..hub.session import HubEndpoint, HubSession
from ..oidc.session import Session
from ..settings import Settings
from . import broker
from .chunks import WideHTTPClient
from .feed import SessionFeed
from .overlay import SCRIPT_ROUTE, OverlayScriptHandler
from .proxy import ProxyHandler, SlashRedirectHandler
from .signin import CallbackHandler, LoginHandler, LogoutHandler, PendingSignIns, StatusHandler

#: Responses of any size stream through; this only caps what tornado would buffer if asked to.
MAX_BODY_SIZE = 1 << 50
#: The page config key (JupyterLab's PageConfig.getOption) that tells the labextension where the UI is.
PAGE_CONFIG_PREFIX = "mlflowOidcPrefix"


def _optional(help: str) -> Unicode:
    """A string setting that may stay unset: then the environment or the mlflow-oidc config file decides."""
    return Unicode(None, allow_none=True, help=help).tag(config=True)


class MLflowOIDC(ExtensionApp):
    """Serves the MLflow UI at `{base_url}mlflow/` with the user's OIDC token; one sign-in for UI and kernels."""

    name = "mlflow_oidc"
    description = __doc__
    load_other_extensions = True

    issuer = _optional("OpenID Provider issuer URL (default: MLFLOW_OIDC_ISSUER or the mlflow-oidc config file).")
    client_id = _optional("OAuth client id (default: MLFLOW_OIDC_CLIENT_ID or the config file).")
    client_secret = _optional("Client secret, for a confidential client only (default: MLFLOW_OIDC_CLIENT_SECRET).")
    scopes = List(
        Unicode(),
        default_value=None,
        allow_none=True,
        help="Scopes to request (default: MLFLOW_OIDC_SCOPES or 'openid profile email').",
    ).tag(config=True)
    audience = _optional("Expected `aud` of JWT access tokens (default: MLFLOW_OIDC_AUDIENCE).")
    upstream_url = _optional(
        "The MLflow tracking server the UI is proxied to, usually behind an identity-aware proxy "
        "(default: MLFLOW_TRACKING_URI)."
    )
    ca_bundle = _optional(
        "CA bundle (PEM file) for HTTPS to the identity provider and the tracking server "
        "(default: MLFLOW_OIDC_CA_BUNDLE; else the system's CAs)."
    )
    prefix = Unicode(DEFAULT_PREFIX, help="Path under the server's base_url where the MLflow UI is served.").tag(
        config=True
    )
    connect_timeout = Float(10.0, help="Seconds to wait for a connection to the tracking server.").tag(config=True)
    request_timeout = Float(
        3600.0, help="Seconds one proxied request may take in total (large artifacts take long)."
    ).tag(config=True)
    post_logout_redirect_uri = Unicode(
        None,
        allow_none=True,
        help="Where the identity provider sends the browser back after sign-out (RP-initiated logout). Register "
        "it at the provider (Keycloak: the client's 'Valid post logout redirect URIs'), or the provider shows an "
        "error page and its session stays signed in. Default: <this server>/<base_url>/mlflow/oauth/logout.",
    ).tag(config=True)
    kernel_broker = Bool(
        True,
        help="Let kernels started by this server use its session (no second sign-in; one party refreshes).",
    ).tag(config=True)

    def initialize_settings(self) -> None:
        self.session: Session | HubSession | None = None
        self.hub: HubEndpoint | None = None
        self.oidc_settings: Settings | None = None
        self.config_problem: str | None = None
        self.broker_secret = secrets.token_urlsafe(32)
        self.pending = PendingSignIns()
        self.prefix = self.prefix.strip("/") or DEFAULT_PREFIX
        try:
            # Started by a hub with `configure_hub`: the hub signed the user in and keeps the tokens.
            self.hub = HubEndpoint.from_env()
            self.oidc_settings = Settings.load(
                issuer=self.issuer,
                client_id=self.client_id,
                client_secret=self.client_secret,
                scopes=tuple(self.scopes) if self.scopes else None,
                audience=self.audience,
                tracking_uri=self.upstream_url,
                ca_bundle=self.ca_bundle,
            )
            if not self.oidc_settings.tracking_uri:
                raise ConfigError(
                    "Setting `upstream_url` is missing: set c.MLflowOIDC.upstream_url or MLFLOW_TRACKING_URI."
                )
            self.session = HubSession(self.oidc_settings, self.hub) if self.hub else Session(self.oidc_settings)
        except OIDCError as exc:
            self.config_problem = str(exc)
            self.log.warning("MLflow UI at /%s/ is not configured: %s", self.prefix, exc)
        self.feed = SessionFeed(self.session)
        #: Where browsers reach this server (scheme://host), as last seen on a signed-in request: links for kernels.
        self.browser_origin: str | None = None
        self.http_client = WideHTTPClient(
            force_instance=True, max_clients=64, max_body_size=MAX_BODY_SIZE, max_buffer_size=64 << 20
        )

    @property
    def upstream(self) -> str:
        """The tracking server's base URL without a trailing slash."""
        assert self.oidc_settings is not None and self.oidc_settings.tracking_uri
        return self.oidc_settings.tracking_uri.rstrip("/")

    @property
    def verify(self) -> bool | str:
        return self.oidc_settings.verify if self.oidc_settings else True

    @property
    def ui_path(self) -> str:
        """Where the MLflow UI is served, e.g. `/user/alice/mlflow/` (always with the trailing slash)."""
        return self.public_path() + "/"

    def public_path(self, *parts: str) -> str:
        """Absolute path (no origin) of one of our URLs under the server's base_url."""
        assert self.serverapp is not None
        return url_path_join(self.serverapp.base_url, self.prefix, *parts)

    def hub_path(self, page: str, next_path: str | None = None) -> str:
        """A page of the hub (`login`, `logout`) on the origin the browser uses; `next` brings people back."""
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        path = url_path_join(base, "hub", page)
        return f"{path}?next={quote(next_path, safe='')}" if next_path else path

    def initialize_handlers(self) -> None:
        p = self.prefix
        # JupyterLab's page config: the labextension finds the UI (and our routes) under the configured prefix.
        assert self.serverapp is not None
        self.serverapp.web_app.settings.setdefault("page_config_data", {})[PAGE_CONFIG_PREFIX] = p
        context: dict[str, Any] = {"ext": self}
        self.handlers.extend(
            [
                (rf"/{p}", SlashRedirectHandler, context),
                (rf"/{p}/oauth/login", LoginHandler, context),
                (rf"/{p}/oauth/callback", CallbackHandler, context),
                (rf"/{p}/oauth/logout", LogoutHandler, context),
                (rf"/{p}/oauth/status", StatusHandler, context),
                (rf"/{p}/{BROKER_PATH}", broker.BrokerHandler, context),
                (rf"/{p}/{SCRIPT_ROUTE}", OverlayScriptHandler, context),
                (rf"/{p}/(.*)", ProxyHandler, context),
            ]
        )

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        if self.session is None:
            return
        # The port is bound now (at load time it may still change), and no kernel has started yet.
        if self.kernel_broker:
            broker.export_environment(self, os.environ)
        # A restarted server picks up its sign-in from the token cache.
        if await asyncio.to_thread(self.session.load_cached):
            identity = self.session.identity
            self.log.info("MLflow UI: resumed the sign-in of %s", identity.username if identity else "?")

    async def stop_extension(self) -> None:
        self.feed.close()
        if self.session is not None:
            self.session.close()
        self.http_client.close()
