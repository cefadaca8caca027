"""Errors raised by mlflow-oidc-jupyter; each message says what happened and what to do next."""

from __future__ import annotations

SIGN_IN_HINT = "run `%mlflow_login` in a notebook or `mlflow-oidc login` in a terminal"


class OIDCError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(OIDCError):
    """A setting is missing or invalid."""


class ProviderError(OIDCError):
    """The identity provider could not be reached or answered something we cannot use."""

    def __init__(
        self, message: str, *, error: str | None = None, transient: bool = False, uncertain: bool = False
    ) -> None:
        super().__init__(message)
        self.error = error
        self.transient = transient
        #: The request may have reached the provider (no answer came back): a rotating refresh token it carried
        #: may be spent already, so it must not simply be sent again.
        self.uncertain = uncertain


class LoginFailed(OIDCError):
    """An interactive sign-in ended without tokens (denied, expired, cancelled, tampered)."""

    def __init__(self, message: str, *, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class LoginRequired(OIDCError):
    """There is no usable session: the user has to sign in (again)."""

    def __init__(self, reason: str = "You are not signed in.") -> None:
        super().__init__(f"{reason} To sign in, {SIGN_IN_HINT}.")
        self.reason = reason


class TokenRefreshFailed(OIDCError):
    """Refreshing the access token failed for a reason that may pass (network, server error)."""


class TokenValidationError(OIDCError):
    """A token from the identity provider failed validation and was not used."""


class AccessDenied(OIDCError):
    """The tracking server accepted who you are but refused what you asked for (HTTP 403)."""
