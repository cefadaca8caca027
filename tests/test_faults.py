"""A long run rides out real faults of the identity provider and the token cache without losing a step.

Each test injects the fault into the real local stack (5 s access tokens, gate without leeway) while a run logs one
metric every 0.25 s, then compares what the run saw with what the tracking server holds. The figures each test
measured go to test-artifacts/faults/ (docs/reliability.md quotes them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_oidc_jupyter.errors import LoginRequired, TokenRefreshFailed
from mlflow_oidc_jupyter.oidc import OIDCClient, Provider, Session, SessionState, set_default_session
from mlflow_oidc_jupyter.oidc.outage import GAVE_UP_RETRY, UNREACHABLE, WAITING_RETRY

from .support.faults import (
    MetricLoop,
    RefusingServer,
    SlowProxy,
    frozen,
    process_cpu_seconds,
    stop_component,
    unwritable,
)
from .support.oidc_sessions import browser_sign_in, settings_for
from .support.waiting import wait_until

ACCESS_TTL = 5
#: A run resumes within this long of the provider's return (the session asks it again every WAITING_RETRY).
RESUME_WITHIN = 2.0
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fault_stack(make_stack):
    """5 s access tokens; refresh tokens outlive every outage here; the gate lets no expired token through."""
    return make_stack(
        env={
            "IDP_ACCESS_TOKEN_TTL": str(ACCESS_TTL),
            "IDP_REFRESH_TOKEN_TTL": "300",
            "IDP_SESSION_TTL": "900",
            "STACK_GATE_LEEWAY": "0",
        },
        name="faults",
    )


@dataclasses.dataclass
class Run:
    """A signed-in session, MLflow pointed at the stack through it, a run to log into, and what it went through."""

    session: Session
    run_id: str
    states: list[tuple[float, SessionState, str | None]]
    cache_dir: Path

    def saw(self, state: SessionState) -> list[str]:
        return [message or "" for _, s, message in self.states if s is state]


@pytest.fixture
def run_on(fault_stack, tmp_path, monkeypatch) -> Iterator:
    """`run_on(user, client=None, **settings)`: sign in, make MLflow use that session, start a run."""
    sessions: list[Session] = []
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "oidc")

    def start(
        user: str = "alice", *, stack=fault_stack, client_for=None, tracking_uri=None, with_run=True, **overrides
    ) -> Run:
        tracking_uri = tracking_uri or stack.mlflow_url
        cache_dir = tmp_path / f"cache-{len(sessions)}"
        settings = dataclasses.replace(settings_for(stack, cache_dir, **overrides), tracking_uri=tracking_uri)
        session = Session(settings, client=client_for(settings) if client_for else None)
        sessions.append(session)
        states: list[tuple[float, SessionState, str | None]] = []
        session.add_listener(lambda snap: states.append((time.time(), snap.state, snap.message)))
        browser_sign_in(session, stack, user)
        set_default_session(session)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        mlflow.set_tracking_uri(tracking_uri)
        run_id = ""
        if with_run:
            client = MlflowClient()
            run_id = client.create_run(client.create_experiment(f"faults-{time.time_ns()}")).info.run_id
        return Run(session, run_id, states, cache_dir)

    yield start
    set_default_session(None)
    mlflow.set_tracking_uri(None)
    for session in sessions:
        session.close()


@pytest.fixture
def figures(request) -> Iterator[dict]:
    """What the test measured, written to test-artifacts/faults/<test>.json for docs/reliability.md."""
    measured: dict = {}
    yield measured
    folder = Path(__file__).resolve().parent.parent / "test-artifacts" / "faults"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{request.node.name}.json").write_text(json.dumps(measured, indent=2))
    print(json.dumps(measured))


def idp_pid(stack) -> int:
    return stack.local.running()["idp"]["pid"]


def just_refreshed(run: Run) -> None:
    """Wait for the start of a token lifetime, so the next refresh and the expiry fall inside the fault."""
    count = run.session.refresh_count
    wait_until(lambda: run.session.refresh_count > count, 3 * ACCESS_TTL, "a token refresh")


def assert_signed_in(run: Run) -> None:
    """Signed in, not failing (a refresh of 5 s tokens may be under way at any moment: wait for its end)."""
    wait_until(lambda: run.session.state is SessionState.SIGNED_IN, 10, "the session signed in, not failing")


def assert_nothing_lost(loop: MetricLoop) -> None:
    assert loop.errors == []
    assert loop.logged_on_server() == [s.number for s in loop.steps], "the server holds every step the run logged"


def test_a_provider_frozen_longer_than_the_timeout_delays_the_run_but_keeps_the_session(fault_stack, run_on, figures):
    run = run_on(timeout=3.0)
    idp_log = len(fault_stack.log("idp"))
    with MetricLoop(run.run_id) as loop:
        just_refreshed(run)
        frozen_at = time.time()
        with frozen(idp_pid(fault_stack)):
            # The refresh due 3.75 s into the token's life is sent and gets no answer; the token expires at 5 s.
            wait_until(lambda: run.saw(SessionState.PROVIDER_UNREACHABLE), 20, "calls waiting for the provider")
            cpu_from, wall_from = process_cpu_seconds(), time.monotonic()
            wait_until(lambda: time.time() - frozen_at >= 10, 15, "a 10 s freeze")
            cpu = (process_cpu_seconds() - cpu_from) / (time.monotonic() - wall_from)
        thawed_at = time.time()
        loop.wait_for_steps_after(thawed_at)

    assert_nothing_lost(loop)
    recovered = loop.first_success_after(thawed_at) - thawed_at
    assert recovered < RESUME_WITHIN
    assert_signed_in(run)
    assert "invalid_grant" not in fault_stack.log("idp")[idp_log:], "the spent refresh token was never sent again"
    assert UNREACHABLE in run.saw(SessionState.PROVIDER_UNREACHABLE)[0]
    assert cpu < 0.25, "waiting threads sleep: nothing polls the lock in a busy loop"
    figures.update(frozen_s=round(thawed_at - frozen_at, 1), timeout_s=3.0, steps=len(loop.steps), lost=0,
                   longest_step_s=round(loop.longest_step(frozen_at, thawed_at), 1),
                   recovered_s=round(recovered, 2), cpu_share_while_waiting=round(cpu, 3))  # fmt: skip


class ProviderBehind(Provider):
    """The real provider, whose token endpoint is reached through `proxy` (everything else directly)."""

    def __init__(self, issuer: str, proxy: SlowProxy) -> None:
        super().__init__(issuer)
        self.proxy = proxy

    @property
    def metadata(self):
        real = super().metadata
        return dataclasses.replace(real, token_endpoint=real.token_endpoint.replace(self.issuer, self.proxy.url))


def test_a_provider_answering_later_than_the_timeout_is_waited_for_not_asked_twice(fault_stack, run_on, figures):
    proxy = SlowProxy(fault_stack.endpoints["ports"]["idp"])
    try:
        run = run_on(timeout=1.5, client_for=through(proxy))
        idp_log = len(fault_stack.log("idp"))
        # Later than the timeout, within the token's life (a token answered late has lived that long already).
        proxy.delay = 3.0
        refreshes = run.session.refresh_count
        with MetricLoop(run.run_id) as loop:
            slow_from = time.time()
            wait_until(lambda: run.session.refresh_count >= refreshes + 2, 60, "two refreshes answered 3 s late")
            proxy.delay = 0.0
            fast_from = time.time()
            loop.wait_for_steps_after(fast_from)
        assert_nothing_lost(loop)
        run.session.close()  # no refresh in flight when the proxy goes
    finally:
        proxy.close()

    assert proxy.answers >= 2
    assert "invalid_grant" not in fault_stack.log("idp")[idp_log:]
    assert_signed_in(run)
    figures.update(delay_s=3.0, timeout_s=1.5, slow_answers=proxy.answers, steps=len(loop.steps), lost=0,
                   longest_step_s=round(loop.longest_step(slow_from, fast_from), 1))  # fmt: skip


def through(proxy: SlowProxy):
    """A client of the real provider whose token requests pass through `proxy`."""
    return lambda settings: OIDCClient(settings, ProviderBehind(settings.issuer, proxy))


def test_a_refresh_whose_answer_is_lost_is_not_sent_again_blindly(fault_stack, run_on, figures):
    proxy = SlowProxy(fault_stack.endpoints["ports"]["idp"])
    try:
        run = run_on(timeout=2.0, client_for=through(proxy))
        proxy.delay = 2.0
        idp_log = len(fault_stack.log("idp"))
        # The provider has taken the refresh (spent the refresh token) and its answer waits in the proxy: cut it.
        wait_until(lambda: "grant_type=refresh_token" in fault_stack.log("idp")[idp_log:], 3 * ACCESS_TTL,
                   "a refresh the provider answered")  # fmt: skip
        assert proxy.pending
        proxy.drop()
        wait_until(lambda: run.session.state is SessionState.LOGIN_REQUIRED, 30, "the session to end")
    finally:
        proxy.close()

    message = run.session.snapshot().message or ""
    assert "answer never arrived" in message
    assert "invalid_grant" not in fault_stack.log("idp")[idp_log:], "the spent token was not sent again"
    with pytest.raises(LoginRequired, match="answer never arrived"):
        run.session.access_token()
    figures.update(message=message)


def test_a_provider_down_for_10s_makes_calls_wait_then_resume_within_2s(fault_stack, run_on, figures):
    run = run_on()
    with MetricLoop(run.run_id) as loop:
        just_refreshed(run)
        expires_at = run.session.snapshot().access_expires_at
        stopped_at = time.time()
        stop_component(fault_stack, "idp")
        try:
            wait_until(lambda: run.saw(SessionState.PROVIDER_UNREACHABLE), 20, "calls waiting for the provider")
            status = subprocess.run(
                [sys.executable, "-m", "mlflow_oidc_jupyter.cli", "status"],
                env={**os.environ, "MLFLOW_OIDC_ISSUER": fault_stack.issuer, "MLFLOW_OIDC_CLIENT_ID": "jupyter",
                     "MLFLOW_OIDC_CACHE_DIR": str(run.cache_dir)},
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            wait_until(lambda: time.time() - stopped_at >= 10, 15, "a 10 s outage")
        finally:
            fault_stack.restart("idp")
        back_at = time.time()
        loop.wait_for_steps_after(back_at)

    assert_nothing_lost(loop)
    recovered = loop.first_success_after(back_at) - back_at
    # What the session controls: it asks the returned provider at its next retry (every WAITING_RETRY). Timed from
    # the provider's own log, so the bound does not also hold the answer's trip back and the next MLflow call, which
    # a loaded machine stretches (`recovered` is still reported below).
    assert _first_refresh_granted_after_restart(fault_stack.log("idp")) - back_at < RESUME_WITHIN
    assert loop.longest_step(stopped_at, expires_at - 1) < 1.0, "while the token was valid, nothing waited"
    assert UNREACHABLE in status.stdout, status.stdout + status.stderr
    assert UNREACHABLE in run.saw(SessionState.PROVIDER_UNREACHABLE)[0]
    assert_signed_in(run)
    figures.update(outage_s=round(back_at - stopped_at, 1), steps=len(loop.steps), lost=0,
                   longest_step_s=round(loop.longest_step(stopped_at, back_at), 1), recovered_s=round(recovered, 2),
                   status_line=next(line for line in status.stdout.splitlines() if UNREACHABLE in line))  # fmt: skip


def test_past_the_patience_calls_fail_clearly_and_the_kept_session_resumes(fault_stack, run_on, figures):
    run = run_on(patience=3.0)
    just_refreshed(run)
    stop_component(fault_stack, "idp")
    try:
        expires_at = run.session.snapshot().access_expires_at
        wait_until(lambda: time.time() > expires_at, 2 * ACCESS_TTL, "the access token's expiry")
        with pytest.raises(TokenRefreshFailed) as gave_up:
            run.session.access_token()
        waited_past_expiry = time.time() - expires_at
    finally:
        fault_stack.restart("idp")
    back_at = time.time()
    token = wait_until(lambda: _token_or_none(run.session), 15, "a token after the provider's return")

    recovered = time.time() - back_at
    assert 3.0 <= waited_past_expiry < 3.0 + WAITING_RETRY + 1
    assert "unreachable" in str(gave_up.value) and "MLFLOW_OIDC_PATIENCE" in str(gave_up.value)
    assert token
    assert_signed_in(run)
    assert recovered < GAVE_UP_RETRY + RESUME_WITHIN, "past the patience the provider is still asked every 5 s"
    figures.update(patience_s=3.0, waited_past_expiry_s=round(waited_past_expiry, 1),
                   recovered_s=round(recovered, 2), error=str(gave_up.value))  # fmt: skip


def _first_refresh_granted_after_restart(idp_log: str) -> float:
    """When the provider granted its first refresh after its last start (Unix time, from its log)."""
    lines = idp_log.splitlines()
    started = max(i for i, line in enumerate(lines) if " idp listening" in line)
    for line in lines[started + 1 :]:
        if " idp token issued" in line and "grant_type=refresh_token" in line:
            return datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp()
    raise AssertionError(f"no refresh granted since the provider's restart: {lines[started:][-5:]}")


def _token_or_none(session: Session) -> str | None:
    try:
        return session.access_token()
    except TokenRefreshFailed:
        return None


def test_the_refresher_sleeps_while_another_thread_holds_the_refresh_lock(fault_stack, run_on, figures):
    run = run_on(timeout=2.0)
    just_refreshed(run)
    refreshed: list = []
    before = run.session._tokens
    with frozen(idp_pid(fault_stack)):
        # A refresh asked for by a user (new roles) holds the lock, waiting for the frozen provider's answer.
        holder = threading.Thread(target=lambda: refreshed.append(run.session.refresh()))
        holder.start()
        wait_until(lambda: run.session._refresh_lock.locked(), 10, "the refresh lock taken")
        wait_until(lambda: run.session._tokens.expires_in() < 0, 2 * ACCESS_TTL, "the refresher being due")
        cpu_from, wall_from = process_cpu_seconds(), time.monotonic()
        time.sleep(3)  # the measurement window itself: CPU used by every thread of this process
        cpu = (process_cpu_seconds() - cpu_from) / (time.monotonic() - wall_from)
    holder.join(timeout=30)

    assert cpu < 0.1
    assert refreshed and refreshed[0].access_token != before.access_token, "the held refresh got its answer"
    assert_signed_in(run)
    figures.update(cpu_share_while_locked=round(cpu, 3))


def test_an_unwritable_token_cache_keeps_the_new_tokens_in_memory_and_saves_them_later(fault_stack, run_on, figures):
    run = run_on()
    cache_file = run.session.cache.path(run.session._key)
    with MetricLoop(run.run_id) as loop:
        just_refreshed(run)
        refreshes = run.session.refresh_count
        with unwritable(run.cache_dir):
            wait_until(lambda: run.session.refresh_count >= refreshes + 2, 4 * ACCESS_TTL, "two refreshes")
            on_disk = json.loads(cache_file.read_text())["tokens"]["access_token"]
        writable_at = time.time()
        wait_until(
            lambda: json.loads(cache_file.read_text())["tokens"]["access_token"] == run.session._tokens.access_token,
            15, "the tokens in memory saved to the cache",
        )  # fmt: skip
        saved_after = time.time() - writable_at
        loop.wait_for_steps_after(time.time())

    later = Session(settings_for(fault_stack, run.cache_dir), background_refresh=False)
    assert later.load_cached() and later.refresh()  # the saved refresh token is the live one
    assert_nothing_lost(loop)
    assert on_disk != run.session._tokens.access_token, "the disk really refused the new tokens"
    warnings = [m for _, s, m in run.states if m and "cannot be written" in m]
    assert warnings and "kept in memory" in warnings[0]
    assert_signed_in(run)
    figures.update(refreshes_while_unwritable=2, steps=len(loop.steps), lost=0, saved_after_s=round(saved_after, 1),
                   warning=warnings[0])  # fmt: skip


def test_logout_revokes_the_refresh_token_another_process_rotated(stack, tmp_path):
    cache = tmp_path / "cache"
    first = Session(settings_for(stack, cache), background_refresh=False)
    browser_sign_in(first, stack, "alice")
    # A second process sharing the cache (same files, same locks) refreshes: the provider rotates the token.
    second = Session(settings_for(stack, cache), background_refresh=False)
    assert second.load_cached()
    live = second.refresh()
    assert first._tokens.refresh_token != live.refresh_token

    first.logout()

    assert first.client.refresh_token_active(live) is False, "the live refresh token was revoked"
    with pytest.raises(LoginRequired):
        second.refresh()


# ------------------------------------------------------------------------------------------ the tracking server


@pytest.fixture
def refusing(fault_stack) -> Iterator:
    """`refusing(stack=fault_stack, **how)`: a RefusingServer in front of the stack's proxy, closed afterwards."""
    servers: list[RefusingServer] = []

    def make(stack=fault_stack, **how) -> RefusingServer:
        servers.append(RefusingServer(stack.mlflow_url, **how))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_tracking_server_whose_clock_is_2s_behind_gets_every_step_and_few_extra_refreshes(run_on, refusing, figures):
    server = refusing(clock_behind=2.0)
    run = run_on(tracking_uri=server.url)
    refreshes = run.session.refresh_count
    with MetricLoop(run.run_id) as loop:
        started = time.monotonic()
        # Every refresh brings a token the server refuses for its first 2 s: six of them.
        wait_until(lambda: run.session.refresh_count >= refreshes + 6, 12 * ACCESS_TTL, "six token lifetimes")
        duration = time.monotonic() - started
    made = run.session.refresh_count - refreshes

    assert_nothing_lost(loop)
    assert server.refused > 0, "the server really refused young tokens"
    ideal = duration / (0.75 * ACCESS_TTL)
    # Beyond the scheduled refreshes: one for where the window cuts a token's life, and the forced-refresh budget of
    # one per 20 s (3 a minute). Over a 20 s window a per-minute ratio alone swung with one refresh more or less.
    allowed = 1 + duration / 20
    assert made - ideal <= allowed, f"{made} refreshes in {duration:.0f} s (ideal {ideal:.1f}, allowed +{allowed:.1f})"
    figures.update(clock_behind_s=2.0, duration_s=round(duration, 1), refreshes=made, ideal=round(ideal, 1),
                   refused=server.refused, steps=len(loop.steps), lost=0,
                   longest_step_s=round(loop.longest_step(0, time.time()), 1))  # fmt: skip


def test_a_server_that_does_not_know_the_user_says_so_and_gets_at_most_one_refresh(stack, run_on, refusing, figures):
    server = refusing(stack=stack, unknown_users={"bob"})
    run = run_on("bob", stack=stack, tracking_uri=server.url, with_run=False)
    refreshes, started = run.session.refresh_count, time.monotonic()
    refusals = []
    for _ in range(20):
        with pytest.raises(MlflowException) as refused:
            MlflowClient().search_experiments(max_results=1)
        refusals.append(refused.value)
    duration = time.monotonic() - started

    message = str(refusals[-1])
    assert {r.error_code for r in refusals} == {"UNAUTHENTICATED"}
    assert "does not know this user" in message and "ask the server's admin" in message
    assert "Authentication required" in message, "the server's own reason"
    assert "mlflow_login" not in message and "sign in again" not in message.lower().replace("signing in again", "")
    assert run.session.refresh_count - refreshes <= 1 + duration / 20
    assert run.session.state is SessionState.SIGNED_IN
    figures.update(calls=20, duration_s=round(duration, 1), refreshes=run.session.refresh_count - refreshes,
                   refused=server.refused, message=message)  # fmt: skip


def test_a_json_403_without_an_error_code_is_a_permission_error_naming_the_servers_reason(
    stack, run_on, refusing, figures
):
    server = refusing(stack=stack, denied_paths=("experiments/delete",))
    run_on("bob", stack=stack, tracking_uri=server.url, with_run=False)
    experiment = MlflowClient().create_experiment(f"keep-{time.time_ns()}")

    with pytest.raises(MlflowException) as refused:
        MlflowClient().delete_experiment(experiment)

    assert refused.value.error_code == "PERMISSION_DENIED"
    assert "Permission denied" in str(refused.value) and "for bob" in str(refused.value)
    assert "Ask an MLflow admin" in str(refused.value)
    figures.update(message=str(refused.value))
