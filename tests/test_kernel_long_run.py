"""Long runs in a kernel with scaled-down token lifetimes: no auth error across many refreshes and idle periods;
a lost session either raises LoginRequired (default) or, with a grace period, waits for a new sign-in."""

from __future__ import annotations

import re
import threading
import time

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_oidc_jupyter.errors import LoginRequired
from mlflow_oidc_jupyter.kernel.login import KernelLogin
from mlflow_oidc_jupyter.kernel.magics import make_presenter
from mlflow_oidc_jupyter.oidc import TokenCache

from .support.idp_pages import approve_device
from .support.oidc_sessions import browser_sign_in, settings_for
from .test_kernel_widget import link_of, wait_for

pytestmark = pytest.mark.slow

ACCESS_TTL, REFRESH_IDLE_TTL = 4, 8


@pytest.fixture(scope="module")
def short_stack(make_stack):
    # The gate's leeway would let expired tokens through and hide missed refreshes.
    return make_stack(
        env={
            "IDP_ACCESS_TOKEN_TTL": str(ACCESS_TTL),
            "IDP_REFRESH_TOKEN_TTL": str(REFRESH_IDLE_TTL),
            "IDP_SESSION_TTL": "600",
            "STACK_GATE_LEEWAY": "0",
        },  # fmt: skip
        name="short-ttl",
    )


@pytest.fixture
def kernel(short_stack, isolated_home):
    """A kernel signed in as bob, its widget attached; MLflow pointed at the short-TTL stack."""
    login = KernelLogin()
    login.configure(settings_for(short_stack, isolated_home / ".cache" / "mlflow-oidc"), flow="device")
    widget = make_presenter(login, text=False)
    login.attach(widget)
    browser_sign_in(login.session, short_stack, "bob")  # quicker than the device flow's 5 s polling
    wait_for(lambda: widget.mode == "signed_in")
    try:
        yield login, widget
    finally:
        login.close()
        mlflow.set_tracking_uri(None)


def log_steps(run_id: str, steps: range, pause: float = 0.25) -> None:
    for step in steps:
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step, run_id=run_id)
        time.sleep(pause)


def logged_steps(run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient().get_metric_history(run_id, "loss"))


def revoke_refresh_token(login: KernelLogin, stack) -> None:
    """An admin ends the session at the IdP: the refresh token stops working, the access token lives on."""
    cache = TokenCache(login.session.settings.cache_dir)
    login.session.client.revoke(cache.load(cache.current_key(stack.issuer, "jupyter")).refresh_token)


def test_a_long_run_outlives_many_token_lifetimes_and_the_refresh_idle_timeout(kernel):
    login, widget = kernel
    run = MlflowClient().create_run(mlflow.set_experiment("long-run").experiment_id)

    log_steps(run.info.run_id, range(0, 32))  # ~8 s busy: two access-token lifetimes
    time.sleep(REFRESH_IDLE_TTL + 2)  # idle past the refresh token's idle timeout
    log_steps(run.info.run_id, range(32, 56))  # ~6 s busy again

    assert logged_steps(run.info.run_id) == list(range(56))
    assert login.session.refresh_count >= 5
    assert login.session.refresh_failures == 0
    shown = int(re.search(r"\((\d+) refresh(?:es)?\)", widget.body.value).group(1))
    assert shown == login.session.refresh_count
    assert "Signed in as bob" in widget.title.value


def test_a_lost_session_raises_login_required_by_default(kernel, short_stack):
    login, widget = kernel
    run = MlflowClient().create_run(mlflow.set_experiment("lost-session").experiment_id)
    revoke_refresh_token(login, short_stack)

    with pytest.raises((LoginRequired, MlflowException), match="has ended"):
        log_steps(run.info.run_id, range(0, 4 * ACCESS_TTL * 4))

    assert widget.mode == "failed"


def test_with_a_grace_period_a_lost_session_waits_for_sign_in_and_no_metric_is_lost(kernel, short_stack):
    login, widget = kernel
    login.configure(login.session.settings, flow="device", grace_period=60)
    run = MlflowClient().create_run(mlflow.set_experiment("grace").experiment_id)

    def user_signs_in_again() -> None:
        # The widget shows a fresh code while the training loop waits; the user approves it.
        wait_for(lambda: widget.mode == "device", timeout=30)
        approve_device(link_of(widget), "bob", short_stack.password("bob"))

    helper = threading.Thread(target=user_signs_in_again, daemon=True)
    helper.start()
    log_steps(run.info.run_id, range(0, 4))
    revoke_refresh_token(login, short_stack)
    started = time.monotonic()
    log_steps(run.info.run_id, range(4, 40))
    helper.join(timeout=5)

    assert logged_steps(run.info.run_id) == list(range(40))
    assert time.monotonic() - started < 40
    assert widget.mode == "signed_in"
