"""When a session asks an unreachable provider again, and until when its calls wait (pure timing rules)."""

from __future__ import annotations

from mlflow_oidc_jupyter.oidc.outage import GAVE_UP_RETRY, UNREACHABLE, WAITING_RETRY, Outage

NOW = 1_000_000.0


def test_while_the_token_works_retries_back_off_but_never_past_its_expiry():
    outage = Outage(patience=900)
    delays = []
    for _ in range(7):
        outage.failed("refused", expires_at=NOW + 20, now=NOW)
        delays.append(outage.retry_at - NOW)

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 20.0]


def test_once_the_token_has_expired_the_provider_is_asked_every_second_until_the_patience_ends():
    outage = Outage(patience=60)
    outage.failed("refused", expires_at=NOW + 1, now=NOW)
    for _ in range(10):
        outage.failed("refused", expires_at=NOW + 1, now=NOW + 30)

    assert outage.retry_at - (NOW + 30) == WAITING_RETRY
    assert outage.deadline(NOW + 1) == NOW + 1 + 60


def test_past_the_patience_it_is_still_asked_every_few_seconds():
    outage = Outage(patience=3)
    for second in range(10):
        outage.failed("refused", expires_at=NOW, now=NOW + second)

    assert outage.retry_at - (NOW + 9) == GAVE_UP_RETRY


def test_the_patience_counts_from_the_expiry_or_from_a_later_first_failure():
    outage = Outage(patience=30)
    outage.failed("refused", expires_at=NOW + 10, now=NOW)

    assert outage.deadline(NOW + 10) == NOW + 40
    assert outage.deadline(NOW - 600) == NOW + 30, "a token found expired in the cache still gets the patience"
    assert outage.ongoing and outage.ended(now=NOW + 12) == 12
    assert not outage.ongoing and outage.retry_at == 0.0


def test_messages_say_what_people_see_and_which_setting_to_change():
    outage = Outage(patience=900)
    outage.failed("The identity provider cannot be reached (ConnectionError).", expires_at=NOW, now=NOW)

    assert outage.waiting_message().startswith(UNREACHABLE) and "15 min" in outage.waiting_message()
    assert "MLFLOW_OIDC_PATIENCE" in outage.gave_up_message("https://idp.example")
