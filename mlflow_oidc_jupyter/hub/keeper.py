"""The hub's token keeper: the one party that refreshes each user's rotating refresh token, one refresh at a time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any, Protocol

from ..errors import OIDCError, ProviderError, TokenValidationError
from ..oidc.client import OIDCClient
from ..oidc.session import PERMANENT_ERRORS
from ..oidc.tokens import TokenSet
from .contract import AUTH_STATE_KEY

logger = logging.getLogger(__name__)

#: auth_state key that says why a user's MLflow session ended (shown until the next sign-in at the hub).
ENDED_KEY = "mlflow_oidc_ended"


class HubUser(Protocol):
    """What the keeper uses of a JupyterHub user (jupyterhub.user.User)."""

    name: str

    async def get_auth_state(self) -> dict[str, Any] | None: ...
    async def save_auth_state(self, auth_state: dict[str, Any] | None) -> None: ...


class KeeperRefusal(OIDCError):
    """Why the keeper hands out no token: `error` and HTTP `status` per the contract, a message for people."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def tokens_in(auth_state: dict[str, Any] | None) -> TokenSet | None:
    """Our validated token set inside a user's auth_state, if it holds one."""
    data = (auth_state or {}).get(AUTH_STATE_KEY)
    return TokenSet.from_dict(data) if isinstance(data, dict) else None


def with_tokens(auth_state: dict[str, Any] | None, tokens: TokenSet) -> dict[str, Any]:
    """auth_state holding `tokens`, also under oauthenticator's own keys so both always agree."""
    state = dict(auth_state or {})
    state.pop(ENDED_KEY, None)
    state[AUTH_STATE_KEY] = tokens.to_dict()
    state["access_token"] = tokens.access_token
    state["refresh_token"] = tokens.refresh_token
    if tokens.id_token:
        state["id_token"] = tokens.id_token
    return state


def without_tokens(auth_state: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    """auth_state that holds no token any more, and says why."""
    state = {k: v for k, v in (auth_state or {}).items() if k not in ("access_token", "refresh_token", "id_token")}
    state.pop("token_response", None)
    state[AUTH_STATE_KEY] = None
    state[ENDED_KEY] = reason
    return state


def fingerprint(token: str) -> str:
    """How a caller names a token it saw refused, without sending the token back."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenKeeper:
    """Hands out fresh access tokens from each user's auth_state; refreshes single-flight per user, in the hub."""

    def __init__(
        self, client: OIDCClient, login_hint: str = "Sign in at the hub again.", log: logging.Logger | None = None
    ) -> None:
        self.client = client
        self.log = log or logger
        self.login_hint = login_hint
        self._locks: dict[str, asyncio.Lock] = {}
        #: Refreshes made at the provider, per user (for tests and the hub's log).
        self.refresh_count: dict[str, int] = {}

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def access_token(self, user: HubUser, *, rejected: str | None = None) -> TokenSet:
        """A token set whose access token is valid for at least the refresh margin; raises KeeperRefusal."""
        async with self._lock(user.name):  # one refresh per user at a time: the rotating token is spent once
            auth_state = await user.get_auth_state()
            tokens = tokens_in(auth_state)
            if tokens is None:
                reason = (auth_state or {}).get(ENDED_KEY) or "You are not signed in at the hub."
                raise KeeperRefusal(401, "login_required", f"{reason} {self.login_hint}")
            force = bool(rejected) and hmac.compare_digest(fingerprint(tokens.access_token), rejected or "")
            if not force and tokens.is_fresh(self.client.settings.refresh_margin):
                return tokens
            if not tokens.refresh_token:
                if not force and tokens.expires_in() > 0:
                    return tokens  # the last moments of a token that cannot be renewed
                raise KeeperRefusal(
                    409,
                    "no_refresh_token",
                    f"The hub's sign-in of {user.name} holds no refresh token, so MLflow access cannot be renewed. "
                    "The hub administrator must let the hub's client get refresh tokens (refresh_token grant, "
                    f"`offline_access` scope) at {self.client.settings.issuer}; then sign in at the hub again.",
                )
            return await self._refresh(user, auth_state, tokens)

    async def _refresh(self, user: HubUser, auth_state: dict[str, Any] | None, tokens: TokenSet) -> TokenSet:
        try:
            fresh = await asyncio.to_thread(self.client.refresh, tokens)
        except ProviderError as exc:
            if exc.transient or exc.error not in PERMANENT_ERRORS:
                self.log.warning("MLflow token refresh for %s failed, may pass: %s", user.name, exc)
                if tokens.expires_in() > 0:
                    return tokens
                raise KeeperRefusal(502, "refresh_failed", f"{exc} Try again shortly.") from None
            await self.end(user, f"Your sign-in at {self.client.settings.issuer} has ended ({exc.error}).")
            raise KeeperRefusal(401, "login_required", f"{self._ended(exc.error)} {self.login_hint}") from None
        except TokenValidationError as exc:
            await self.end(user, f"The refreshed tokens were rejected: {exc}")
            raise KeeperRefusal(401, "login_required", f"{exc} {self.login_hint}") from None
        except OIDCError as exc:
            raise KeeperRefusal(502, "refresh_failed", f"{exc} Try again shortly.") from None
        await user.save_auth_state(with_tokens(auth_state, fresh))
        self.refresh_count[user.name] = self.refresh_count.get(user.name, 0) + 1
        self.log.info("MLflow tokens of %s refreshed", user.name)
        return fresh

    def _ended(self, error: str | None) -> str:
        return f"Your sign-in at {self.client.settings.issuer} has ended ({error or 'refused'})."

    async def end(self, user: HubUser, reason: str) -> TokenSet | None:
        """Drop the user's tokens from auth_state, keeping why; returns the tokens dropped."""
        auth_state = await user.get_auth_state()
        await user.save_auth_state(without_tokens(auth_state, reason))
        return tokens_in(auth_state)

    async def sign_out(self, user: HubUser) -> TokenSet | None:
        """Hub logout: forget the user's tokens and revoke the refresh token at the provider."""
        async with self._lock(user.name):
            tokens = await self.end(user, "You signed out at the hub.")
        if tokens is not None and tokens.refresh_token:
            try:
                await asyncio.to_thread(self.client.revoke, tokens.refresh_token)
            except OIDCError as exc:
                self.log.warning("Could not revoke the refresh token of %s: %s", user.name, exc)
        return tokens
