"""The hub's own handlers: a user's server gets that user's access token; hub logout ends MLflow access."""

from __future__ import annotations

import json
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.user import User
from jupyterhub.utils import url_path_join
from oauthenticator.oauth2 import OAuthLogoutHandler

from ..errors import OIDCError
from ..oidc.remote import token_answer
from .contract import SCOPE
from .keeper import KeeperRefusal


class TokenHandler(APIHandler):
    """`GET /hub/api/mlflow-oidc/users/<name>/token`: the named user's own token asks for that user's access token.

    The scope check lets a token act for `<name>` only; the owner check refuses even a token that may act for
    others (an admin's, a service's): a server's JUPYTERHUB_API_TOKEN belongs to its user, so that is what it gets.
    """

    async def get(self, user_name: str) -> None:
        self.set_header("Cache-Control", "no-store")
        requester = self.current_user
        # Checked here, not with @needs_scope: custom scopes exist only once the hub has loaded its config.
        allowed = requester is not None and self.has_scope(f"{SCOPE}!user={user_name}")
        if not allowed or not isinstance(requester, User) or requester.name != user_name:
            self._reply(403, {"error": "forbidden", "message": "Only a user's own token gets that user's tokens."})
            return
        authenticator = self.authenticator
        if not authenticator.enable_auth_state:
            self._reply(
                503,
                {
                    "error": "not_configured",
                    "message": "The hub keeps no auth_state, so it has no tokens for MLflow. The hub administrator "
                    "must set c.Authenticator.enable_auth_state = True and JUPYTERHUB_CRYPT_KEY (see "
                    "docs/jupyterhub.md); then sign in at the hub again.",
                },
            )
            return
        login_url = url_path_join(self.hub.base_url, "login")
        try:
            tokens = await authenticator.keeper.access_token(requester, rejected=self.get_argument("rejected", None))
        except KeeperRefusal as exc:
            body = {"error": exc.error, "message": exc.message}
            if exc.status == 401:
                body["login_url"] = login_url
            self._reply(exc.status, body)
            return
        except OIDCError as exc:
            self._reply(502, {"error": "refresh_failed", "message": str(exc)})
            return
        self._reply(200, token_answer(tokens.access_token, tokens.expires_at, tokens.identity))

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))


class LogoutHandler(OAuthLogoutHandler):
    """Hub logout also ends MLflow access: tokens leave auth_state, the refresh token is revoked, and the
    provider's session ends (RP-initiated logout with the ID token as hint)."""

    _id_token: str | None = None

    async def handle_logout(self) -> None:
        await super().handle_logout()
        user = self.current_user
        if isinstance(user, User) and self.authenticator.enable_auth_state:
            tokens = await self.authenticator.keeper.sign_out(user)
            self._id_token = tokens.id_token if tokens else None

    async def render_logout_page(self) -> None:
        authenticator = self.authenticator
        if self._id_token and authenticator.post_logout_redirect_uri and not authenticator.logout_redirect_url:
            try:
                url = authenticator.keeper.client.end_session_url(authenticator.post_logout_redirect_uri)
            except OIDCError as exc:
                self.log.warning("No end-session URL from the provider: %s", exc)
                url = None
            if url:
                self.redirect(url)
                return
        await super().render_logout_page()
