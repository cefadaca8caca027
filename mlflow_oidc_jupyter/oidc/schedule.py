"""When to renew tokens: ahead of expiry by a margin, never earlier than 75% into their life, never during a backoff."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # tokens.py uses renew_at itself
    from .tokens import TokenSet


def renew_at(expires_at: float, issued_at: float, margin: float, share: float = 0.25) -> float:
    """`margin` seconds before `expires_at`, but at most `share` of the lifetime early (short-lived credentials)."""
    return expires_at - min(margin, share * max(0.0, expires_at - issued_at))


def next_refresh_at(tokens: TokenSet, margin: float, not_before: float = 0.0) -> float:
    """When a session holding `tokens` refreshes: before the access token expires or the refresh token idles out,
    and not before `not_before` (the end of a backoff after failed refreshes)."""
    due = tokens.refresh_due_at(margin)
    if tokens.refresh_expires_at:
        # Renew before the refresh token's idle timeout even when the access token lives longer.
        due = min(due, renew_at(tokens.refresh_expires_at, tokens.issued_at, margin))
    return max(due, not_before)
