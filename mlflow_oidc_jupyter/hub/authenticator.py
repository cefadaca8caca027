"""The hub's authenticator: oauthenticator's GenericOAuthenticator as a confidential OIDC client that keeps tokens."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from traitlets import Float, Unicode, default

from ..oidc.client import OIDCClient
from ..oidc.tokens import TokenSet
from ..settings import Settings
from .contract import AUTH_STATE_KEY
from .handlers import LogoutHandler, TokenHandler
from .keeper import KeeperRefusal, TokenKeeper, with_tokens


class MLflowOIDCAuthenticator(GenericOAuthenticator):
    """Signs people in at the hub with OIDC (auth code + PKCE, confidential client) and keeps their tokens.

    The validated token set lives in the user's encrypted auth_state; `TokenKeeper` refreshes it (the hub is the
    one party that spends the rotating refresh token) and hands each user's server that user's access tokens.
    """

    issuer = Unicode(
        help="OpenID Provider issuer URL; the authorize and token URLs come from its discovery document "
        "(default: MLFLOW_OIDC_ISSUER).",
    ).tag(config=True)
    audience = Unicode(
        None, allow_none=True, help="Expected `aud` of JWT access tokens (default: MLFLOW_OIDC_AUDIENCE)."
    ).tag(config=True)
    resource = Unicode(
        None, allow_none=True, help="RFC 8707 resource indicator for token requests (default: MLFLOW_OIDC_RESOURCE)."
    ).tag(config=True)
    ca_bundle = Unicode(
        None, allow_none=True, help="CA bundle (PEM) for HTTPS to the provider (default: MLFLOW_OIDC_CA_BUNDLE)."
    ).tag(config=True)
    refresh_margin = Float(
        60.0, help="An access token handed to a server stays valid at least this long (capped at 25% of its life)."
    ).tag(config=True)
    post_logout_redirect_uri = Unicode(
        help="Where the provider sends people after hub logout; register it exactly at the provider "
        "(default: the hub's login page next to oauth_callback_url).",
    ).tag(config=True)

    @default("issuer")
    def _issuer_default(self) -> str:
        return os.environ.get("MLFLOW_OIDC_ISSUER", "")

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email", "offline_access"]

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("login_service")
    def _login_service_default(self) -> str:
        return "your organisation's sign-in"

    @default("basic_auth")
    def _basic_auth_default(self) -> bool:
        return True  # client_secret_basic, as the package's own client uses for refresh and revocation

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @default("authorize_url")
    def _authorize_url_default(self) -> str:
        return self.keeper.client.provider.metadata.authorization_endpoint or ""

    @default("token_url")
    def _token_url_default(self) -> str:
        return self.keeper.client.provider.metadata.token_endpoint

    @default("post_logout_redirect_uri")
    def _post_logout_default(self) -> str:
        callback = self.oauth_callback_url
        return callback[: -len("oauth_callback")] + "login" if callback.endswith("/oauth_callback") else ""

    @property
    def settings(self) -> Settings:
        """This client's settings in the package's own terms (discovery, validation, refresh)."""
        if getattr(self, "_settings", None) is None:
            self._settings = Settings.load(
                issuer=self.issuer or None,
                client_id=self.client_id or None,
                client_secret=self.client_secret or None,
                scopes=tuple(self.scope) or None,
                audience=self.audience,
                resource=self.resource,
                ca_bundle=self.ca_bundle,
                refresh_margin=self.refresh_margin,
            )
        return self._settings

    @property
    def keeper(self) -> TokenKeeper:
        """The one place the hub refreshes tokens (per user, single-flight)."""
        if getattr(self, "_keeper", None) is None:
            self._keeper = TokenKeeper(OIDCClient(self.settings), log=self.log)
        return self._keeper

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        handlers = [(path, LogoutHandler if path == r"/logout" else h) for path, h in super().get_handlers(app)]
        return [*handlers, (r"/api/mlflow-oidc/users/([^/]+)/token", TokenHandler)]

    async def token_to_user(self, token_info: dict[str, Any]) -> dict[str, Any]:
        """Who signed in, from the ID token checked like every token here (signature, iss, aud, exp, at_hash)."""
        tokens = await self._validated(token_info)
        assert tokens.identity is not None
        identity = tokens.identity
        return {
            "sub": identity.subject,
            "preferred_username": identity.username,
            "email": identity.email,
            "name": identity.name,
            "roles": list(identity.roles),
        }

    async def _validated(self, token_info: dict[str, Any]) -> TokenSet:
        client = self.keeper.client
        return await asyncio.to_thread(client.tokens_from_response, dict(token_info), grant="authorization_code")

    async def build_auth_state_dict(self, token_info: dict[str, Any], user_info: dict[str, Any]) -> dict[str, Any]:
        state = super().build_auth_state_dict(token_info, user_info)
        state.pop("token_response", None)  # the same tokens again, unvalidated: keep one copy
        return with_tokens(state, await self._validated(token_info))

    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> bool:
        """Through the keeper (never a second refresher): False when only a new sign-in at the hub helps."""
        if not self.enable_auth_state:
            return True
        auth_state = await user.get_auth_state()
        if not auth_state or auth_state.get(AUTH_STATE_KEY) is None:
            return False
        try:
            await self.keeper.access_token(user)
        except KeeperRefusal as exc:
            # A new sign-in is the only way on when the session ended or cannot be renewed; a flaky provider is not.
            return exc.error == "refresh_failed"
        return True
