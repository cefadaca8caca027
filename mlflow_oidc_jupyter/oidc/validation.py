"""Validation of ID tokens and JWT access tokens against the provider's keys, and the identity they prove."""

from __future__ import annotations

from typing import Any

from authlib.oidc.core import CodeIDToken
from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from joserfc.jwt import JWTClaimsRegistry

from ..errors import TokenValidationError
from ..settings import Settings
from .provider import Provider
from .tokens import Identity


class TokenValidator:
    """Checks tokens from one provider for one client; the only path from tokens to an `Identity`."""

    def __init__(self, settings: Settings, provider: Provider) -> None:
        self.settings = settings
        self.provider = provider

    def id_token_claims(
        self,
        id_token: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
        expected_subject: str | None = None,
    ) -> dict[str, Any]:
        """Signature, alg allow-list, iss, aud, azp, exp, iat, nonce (when we sent one), at_hash."""
        try:
            token = self.provider.decode(id_token)
            claims = CodeIDToken(
                token.claims,
                token.header,
                options={
                    "iss": {"essential": True, "value": self.provider.issuer},
                    "aud": {"essential": True, "value": self.settings.client_id},
                    "exp": {"essential": True},
                    "iat": {"essential": True},
                },
                params={"nonce": nonce, "client_id": self.settings.client_id, "access_token": access_token},
            )
            claims.validate(leeway=self.settings.leeway)
        except JoseError as exc:
            raise TokenValidationError(f"The ID token was rejected ({_describe(exc)}); sign in again.") from None
        if nonce and claims.get("nonce") != nonce:
            raise TokenValidationError("The ID token does not carry the nonce of this sign-in; sign in again.")
        if expected_subject and claims["sub"] != expected_subject:
            raise TokenValidationError("A refreshed ID token names another user; sign in again.")
        return dict(claims)

    def access_token_claims(self, access_token: str) -> dict[str, Any] | None:
        """Claims of a JWT access token after checking it; None for an opaque token (nothing to check)."""
        if not _looks_like_jws(access_token):
            return None
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.provider.issuer},
            "exp": {"essential": True},
        }
        if self.settings.audience:
            options["aud"] = {"essential": True, "value": self.settings.audience}
        try:
            token = self.provider.decode(access_token)
            JWTClaimsRegistry(leeway=self.settings.leeway, **options).validate(token.claims)
        except JoseError as exc:
            raise TokenValidationError(f"The access token was rejected ({_describe(exc)}).") from None
        return dict(token.claims)

    def identity(
        self, id_claims: dict[str, Any] | None, access_claims: dict[str, Any] | None, *, fallback_subject: str
    ) -> Identity:
        """Who the tokens speak for: ID token claims first, the access token for roles and for bots."""
        paths = self.settings.roles_claim
        roles = _roles(access_claims, paths) or _roles(id_claims, paths)
        if id_claims:
            return Identity.from_claims(self.provider.issuer, id_claims, roles)
        if access_claims:
            claims = {"sub": access_claims.get("sub") or access_claims.get("client_id") or fallback_subject}
            claims |= {k: access_claims[k] for k in ("preferred_username", "email", "client_id") if k in access_claims}
            return Identity.from_claims(self.provider.issuer, claims, roles)
        return Identity(issuer=self.provider.issuer, subject=fallback_subject, username=fallback_subject)


def _looks_like_jws(token: str) -> bool:
    if token.count(".") != 2:
        return False
    try:
        header = extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError):
        return False
    return isinstance(header, dict) and "alg" in header


def _roles(claims: dict[str, Any] | None, paths: tuple[str, ...]) -> tuple[str, ...]:
    """The roles at every dotted claim path, merged in order without duplicates (as the gate reads them)."""
    found: list[str] = []
    for dotted in paths:
        value: Any = claims
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values = value.split() if isinstance(value, str) else value if isinstance(value, list | tuple) else []
        found.extend(str(v) for v in values if isinstance(v, str) and v not in found)
    return tuple(found)


def _describe(exc: JoseError) -> str:
    # joserfc messages name the failing claim or check, never the token.
    text = getattr(exc, "description", None) or str(exc) or type(exc).__name__
    return f"{exc.error}: {text}" if getattr(exc, "error", None) and exc.error not in text else text


__all__ = ["TokenValidator"]
