"""Token sets and identities: immutable values that know their expiry and never show a token in repr."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from joserfc.errors import JoseError
from joserfc.jws import extract_compact

from .schedule import renew_at


@dataclass(frozen=True)
class Identity:
    """Who signed in, from validated claims only."""

    issuer: str
    subject: str
    username: str
    email: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()

    @classmethod
    def from_claims(cls, issuer: str, claims: dict[str, Any], roles: tuple[str, ...] = ()) -> Identity:
        subject = str(claims["sub"])
        username = claims.get("preferred_username") or claims.get("email") or claims.get("client_id") or subject
        return cls(
            issuer=issuer,
            subject=subject,
            username=str(username),
            email=claims.get("email"),
            name=claims.get("name"),
            roles=roles,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "roles": list(self.roles)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        return cls(**{**data, "roles": tuple(data.get("roles", ()))})


@dataclass(frozen=True)
class TokenSet:
    """One answer of the token endpoint, validated; times are epoch seconds on this machine's clock."""

    access_token: str = field(repr=False)
    expires_at: float
    issued_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    id_token: str | None = field(default=None, repr=False)
    token_type: str = "Bearer"  # noqa: S105
    scope: str = ""
    identity: Identity | None = None
    #: grant that started this session: "authorization_code", "device_code" or "client_credentials".
    grant: str = "authorization_code"

    @classmethod
    def from_response(
        cls, response: dict[str, Any], *, grant: str, previous: TokenSet | None = None, now: float | None = None
    ) -> TokenSet:
        """Build from a token endpoint response; keeps the previous refresh/ID token when not rotated."""
        now = time.time() if now is None else now
        expires_in = response.get("expires_in")
        expires_at = now + float(expires_in) if expires_in is not None else _jwt_exp(response["access_token"])
        if expires_at is None:
            expires_at = now + 300.0  # neither expires_in nor a readable exp: assume a short life
        refresh_token = response.get("refresh_token") or (previous.refresh_token if previous else None)
        return cls(
            access_token=response["access_token"],
            expires_at=expires_at,
            issued_at=now,
            refresh_token=refresh_token,
            refresh_expires_at=_refresh_expiry(response, refresh_token, now, previous),
            id_token=response.get("id_token") or (previous.id_token if previous else None),
            token_type=response.get("token_type", "Bearer"),
            scope=response.get("scope") or (previous.scope if previous else ""),
            identity=previous.identity if previous else None,
            grant=grant,
        )

    @property
    def lifetime(self) -> float:
        """How long the access token was valid when it was issued."""
        return max(0.0, self.expires_at - self.issued_at)

    def expires_in(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def refresh_due_at(self, margin: float) -> float:
        """When to refresh: `margin` before expiry, but never earlier than 75% into the token's life."""
        return renew_at(self.expires_at, self.issued_at, margin)

    def is_fresh(self, margin: float, now: float | None = None) -> bool:
        return (time.time() if now is None else now) < self.refresh_due_at(margin)

    def with_identity(self, identity: Identity | None) -> TokenSet:
        return replace(self, identity=identity)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["identity"] = self.identity.to_dict() if self.identity else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenSet:
        identity = Identity.from_dict(data["identity"]) if data.get("identity") else None
        return cls(**{**data, "identity": identity})


def _jwt_exp(token: str | None) -> float | None:
    """The `exp` of a JWT, read without verification: only ever used as a scheduling hint."""
    return _unverified_time(token, "exp")


def issued_at_hint(token: str | None) -> float | None:
    """The `iat` of a JWT, read without verification: a hint of its age, never a reason to trust it."""
    return _unverified_time(token, "iat")


def _unverified_time(token: str | None, claim: str) -> float | None:
    if not token or token.count(".") != 2:
        return None
    try:
        claims = json.loads(extract_compact(token.encode()).payload)
    except (JoseError, ValueError, TypeError):
        return None
    value = claims.get(claim) if isinstance(claims, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _refresh_expiry(
    response: dict[str, Any], refresh_token: str | None, now: float, previous: TokenSet | None
) -> float | None:
    if not refresh_token:
        return None
    if response.get("refresh_expires_in"):  # Keycloak; 0 means "no idle limit" (offline tokens)
        return now + float(response["refresh_expires_in"])
    if response.get("refresh_token"):
        return _jwt_exp(refresh_token)
    return previous.refresh_expires_at if previous else None
