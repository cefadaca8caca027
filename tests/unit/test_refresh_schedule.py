"""Tokens are renewed ahead of expiry (margin or last quarter of their life), before an idle timeout, after backoff."""

from __future__ import annotations

import pytest

from mlflow_oidc_jupyter.oidc.backoff import backoff_delay
from mlflow_oidc_jupyter.oidc.schedule import next_refresh_at, renew_at
from mlflow_oidc_jupyter.oidc.tokens import TokenSet

T0 = 1_000_000.0


def tokens(access_life: float, refresh_life: float | None = None) -> TokenSet:
    return TokenSet(
        access_token="a",
        expires_at=T0 + access_life,
        issued_at=T0,
        refresh_token="r" if refresh_life else None,
        refresh_expires_at=T0 + refresh_life if refresh_life else None,
    )


def test_a_long_lived_token_is_renewed_one_margin_before_expiry():
    assert next_refresh_at(tokens(3600), margin=60) == T0 + 3600 - 60


def test_a_short_lived_token_is_renewed_in_the_last_quarter_of_its_life():
    assert next_refresh_at(tokens(40), margin=60) == T0 + 30
    assert tokens(40).is_fresh(60, now=T0 + 29.9) and not tokens(40).is_fresh(60, now=T0 + 30)


def test_the_refresh_tokens_idle_timeout_comes_first_when_it_is_earlier():
    # Access token for an hour, refresh token idles out after 30 min: renew 60 s before the idle timeout.
    assert next_refresh_at(tokens(3600, refresh_life=1800), margin=60) == T0 + 1800 - 60


def test_no_refresh_before_a_backoff_ends():
    assert next_refresh_at(tokens(3600), margin=60, not_before=T0 + 3590) == T0 + 3590


def test_renew_at_uses_the_margin_or_a_share_of_the_life():
    assert renew_at(T0 + 100, T0, margin=10) == T0 + 90
    assert renew_at(T0 + 100, T0, margin=60, share=0.2) == T0 + 80
    assert renew_at(T0 + 100, T0 + 200, margin=10) == T0 + 100  # already expired at issue: renew at expiry


@pytest.mark.parametrize(("failures", "pause"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (50, 30.0)])
def test_backoff_doubles_and_is_capped(failures, pause):
    assert backoff_delay(failures) == pause
