"""The Session under short token lifetimes: refresh cadence, single-flight across threads and processes, endings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from mlflow_oidc_jupyter.errors import LoginFailed, LoginRequired
from mlflow_oidc_jupyter.oidc import Session, SessionState, TokenCache, set_default_session

from .support.oidc_sessions import browser_sign_in, settings_for
from .support.waiting import wait_until

ACCESS_TTL = 5
REFRESH_IDLE_TTL = 10
DEVICE_CODE_TTL = 6
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_stack(make_stack):
    """A stack whose access tokens live 5 s and whose refresh tokens die after 10 s unused."""
    return make_stack(
        env={
            "IDP_ACCESS_TOKEN_TTL": str(ACCESS_TTL),
            "IDP_REFRESH_TOKEN_TTL": str(REFRESH_IDLE_TTL),
            "IDP_DEVICE_CODE_TTL": str(DEVICE_CODE_TTL),
        },
        name="short-ttl",
    )


@pytest.fixture
def signed_in(short_stack, tmp_path) -> Iterator[Session]:
    session = Session(settings_for(short_stack, tmp_path / "cache"))
    browser_sign_in(session, short_stack, "alice")
    yield session
    session.close()


@pytest.fixture
def mlflow_through_proxy(short_stack, monkeypatch):
    """MLflow in this process talks to the stack's proxy with MLFLOW_TRACKING_AUTH=oidc."""
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "oidc")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", short_stack.mlflow_url)
    mlflow.set_tracking_uri(short_stack.mlflow_url)
    yield
    set_default_session(None)
    mlflow.set_tracking_uri(None)


def ideal_refreshes(duration: float) -> float:
    return duration / (0.75 * ACCESS_TTL)  # default margin 60 s is capped at 25% of a 5 s lifetime


def test_eight_threads_log_for_a_minute_on_5s_tokens_without_one_auth_failure(
    short_stack, signed_in, mlflow_through_proxy
):
    set_default_session(signed_in)
    started = time.monotonic() - (time.time() - signed_in._tokens.issued_at)
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(f"soak-{time.time_ns()}")).info.run_id
    failures: list[str] = []
    calls = [0] * 8
    stop = threading.Event()

    def log(worker: int) -> None:
        step = 0
        while not stop.is_set():
            try:
                client.log_metric(run_id, f"worker{worker}", float(step), step=step)
                calls[worker] += 1
            except Exception as exc:  # any failure counts against the session
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
            step += 1
            stop.wait(0.05)

    threads = [threading.Thread(target=log, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(60)
    stop.set()
    for t in threads:
        t.join()
    duration = time.monotonic() - started

    assert failures == []
    assert sum(calls) > 8 * 60, "every thread kept logging"
    ideal = ideal_refreshes(duration)
    print(f"calls={sum(calls)} refreshes={signed_in.refresh_count} ideal={ideal:.1f} duration={duration:.1f}s")
    assert abs(signed_in.refresh_count - ideal) <= 0.1 * ideal
    assert len(client.get_metric_history(run_id, "worker0")) == calls[0]


def test_two_processes_sharing_the_cache_refresh_a_rotating_token_once_between_them(short_stack, tmp_path):
    cache = tmp_path / "cache"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_AUTH": "oidc",
        "MLFLOW_TRACKING_URI": short_stack.mlflow_url,
        "MLFLOW_OIDC_ISSUER": short_stack.issuer,
        "MLFLOW_OIDC_CLIENT_ID": "jupyter",
        "MLFLOW_OIDC_CACHE_DIR": str(cache),
    }
    duration = 15
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(duration)], env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(2)
    ]  # fmt: skip
    try:
        # Start-up (importing mlflow) can outlast the 10 s refresh token on a busy machine: sign in once both
        # workers are ready, so the token's clock starts when they do.
        assert [w.stdout.readline().strip() for w in workers] == ["ready", "ready"]
        first = Session(settings_for(short_stack, cache), background_refresh=False)
        browser_sign_in(first, short_stack, "bob")
        first.close()
        signed_in_at = time.monotonic()
        idp_log_before = short_stack.log("idp")
        for w in workers:
            w.stdin.write("go\n")
            w.stdin.flush()
        results = [json.loads(w.communicate(timeout=duration + 120)[0]) for w in workers]
        elapsed = time.monotonic() - signed_in_at
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()

    assert [w.returncode for w in workers] == [0, 0]
    assert [r["errors"] for r in results] == [[], []]
    assert all(r["calls"] >= 2 * duration / ACCESS_TTL for r in results), "each kept calling across the refreshes"
    refreshes = sum(r["refreshes"] for r in results)
    print(f"refreshes per process={[r['refreshes'] for r in results]} adopted={[r['adopted'] for r in results]}")
    assert refreshes <= ideal_refreshes(elapsed) * 1.1 + 1, "the two processes never refreshed the same token twice"
    assert all(r["adopted"] > 0 for r in results) or min(r["refreshes"] for r in results) == 0
    assert short_stack.log("idp")[len(idp_log_before) :].count("invalid_grant") == 0


WORKER = """
import json, sys, time, logging
logging.basicConfig(level=logging.DEBUG, format="%(created).2f %(process)d %(threadName)s %(message)s")
for name in ("urllib3", "mlflow", "filelock", "alembic", "git"):
    logging.getLogger(name).setLevel(logging.WARNING)
from mlflow import MlflowClient
from mlflow_oidc_jupyter.oidc import get_default_session
print("ready", flush=True)
sys.stdin.readline()
client, errors, calls = MlflowClient(), [], 0
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    try:
        client.search_experiments(max_results=1)
        calls += 1
    except Exception as exc:
        errors.append(str(exc)[:300])
    time.sleep(0.1)
s = get_default_session()
print(json.dumps({"calls": calls, "errors": errors, "refreshes": s.refresh_count, "adopted": s.adopted_count}))
"""


def test_an_idle_session_is_kept_alive_past_the_refresh_token_idle_timeout(short_stack, tmp_path, signed_in):
    unattended = Session(settings_for(short_stack, tmp_path / "other-cache"), background_refresh=False)
    browser_sign_in(unattended, short_stack, "bob")

    time.sleep(REFRESH_IDLE_TTL + 4)

    assert signed_in.access_token()
    # Its background refresher may be mid-refresh at this instant (under load it often is): it must end signed in.
    wait_until(lambda: signed_in.state is SessionState.SIGNED_IN, timeout=30, what="the kept session signed in")
    with pytest.raises(LoginRequired, match="mlflow-oidc login"):
        unattended.access_token()


def test_a_device_code_nobody_approves_expires_with_a_clear_error(short_stack, tmp_path):
    session = Session(settings_for(short_stack, tmp_path / "cache"), background_refresh=False)
    shown = []
    started = time.monotonic()

    with pytest.raises(LoginFailed, match="expired") as failed:
        session.login_device(shown.append)

    assert failed.value.error == "expired_token"
    assert DEVICE_CODE_TTL <= time.monotonic() - started < DEVICE_CODE_TTL + 6
    assert len(shown) == 1 and session.state is SessionState.SIGNED_OUT


def test_a_revoked_refresh_token_ends_the_session_with_a_sign_in_hint(short_stack, signed_in):
    seen: list[SessionState] = []
    signed_in.add_listener(lambda snap: seen.append(snap.state))
    cache_file = signed_in.cache.path(signed_in._key)
    assert cache_file.exists()
    signed_in.client.revoke(signed_in._tokens.refresh_token)

    with pytest.raises(LoginRequired) as ended:
        signed_in.refresh()

    assert "%mlflow_login" in str(ended.value) and "mlflow-oidc login" in str(ended.value)
    assert seen[-1] is SessionState.LOGIN_REQUIRED
    assert signed_in.snapshot().message and "invalid_grant" in signed_in.snapshot().message
    assert not cache_file.exists()
    with pytest.raises(LoginRequired):
        signed_in.access_token()


class CacheWithAHook(TokenCache):
    """The real token cache, calling `hook()` before it forgets an entry: the moment a session is ending.

    Not a mock: every call still reaches the files; the hook only lets the test act inside that moment.
    """

    def __init__(self, directory: Path, hook) -> None:
        super().__init__(directory)
        self.hook = hook

    def delete(self, key: str) -> None:
        self.hook()
        super().delete(key)

    def clear_current(self, issuer: str, client_id: str, key: str) -> None:
        self.hook()
        super().clear_current(issuer, client_id, key)


def test_while_a_revoked_session_ends_other_threads_get_a_token_or_the_has_ended_message(short_stack, tmp_path):
    probes: list[threading.Thread] = []
    answers: list[str] = []

    def other_threads_ask_now() -> None:
        # An MLflow call and a 401 retry arrive from other threads while the refresh that failed is ending it.
        sent = session._tokens.access_token if session._tokens else "gone"
        for ask in (session.access_token, lambda: session.token_rejected(sent)):
            probe = threading.Thread(target=lambda ask=ask: answers.append(_outcome(ask)))
            probe.start()
            probe.join(timeout=1)  # a probe may wait for the failing refresh: it answers once that ends
            probes.append(probe)

    session = Session(settings_for(short_stack, tmp_path / "cache"), background_refresh=False)
    session.cache = CacheWithAHook(tmp_path / "cache", other_threads_ask_now)
    browser_sign_in(session, short_stack, "alice")
    session.client.revoke(session._tokens.refresh_token)

    with pytest.raises(LoginRequired, match="has ended"):
        session.refresh()
    for probe in probes:
        probe.join(timeout=30)

    assert len(answers) == len(probes) >= 4
    assert all(a == "token" or "has ended" in a for a in answers), answers
    assert session.state is SessionState.LOGIN_REQUIRED
    with pytest.raises(LoginRequired, match="has ended"):
        session.access_token()  # the ended tokens were not picked up again from the cache


def _outcome(ask) -> str:
    try:
        return "token" if ask() else "empty"
    except LoginRequired as exc:
        return str(exc)


def test_an_unreachable_idp_is_retried_while_the_token_still_works(short_stack, signed_in):
    seen: list[SessionState] = []
    signed_in.add_listener(lambda snap: seen.append(snap.state))
    idp = short_stack.local.running()["idp"]
    os.killpg(idp["pid"], signal.SIGTERM)
    try:
        deadline = time.time() + 2 * ACCESS_TTL
        while SessionState.REFRESH_FAILING not in seen and time.time() < deadline:
            assert signed_in.access_token()  # still valid: served while refresh is failing
            time.sleep(0.2)
        assert SessionState.REFRESH_FAILING in seen
    finally:
        short_stack.restart("idp")
    deadline = time.time() + 20
    while signed_in.state is not SessionState.SIGNED_IN and time.time() < deadline:
        time.sleep(0.2)
    assert signed_in.access_token() and signed_in.state is SessionState.SIGNED_IN


def test_cache_files_are_private_to_the_user(signed_in):
    cache: TokenCache = signed_in.cache
    assert oct(cache.directory.stat().st_mode & 0o777) == "0o700"
    for path in Path(cache.directory).iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path.name


def test_a_new_idp_signing_key_is_picked_up_from_the_jwks(short_stack, signed_in, mlflow_through_proxy, tmp_path):
    fetches = signed_in.client.provider.jwks_fetches
    old_kid = _kid(signed_in._tokens.id_token)
    (short_stack.run_dir / "idp-keys.json").unlink()
    short_stack.restart("idp")

    signed_in.refresh()
    again = Session(settings_for(short_stack, tmp_path / "relogin"), background_refresh=False)
    browser_sign_in(again, short_stack, "alice")

    assert _kid(signed_in._tokens.id_token) != old_kid
    assert signed_in.client.provider.jwks_fetches == fetches + 1
    assert again.identity == signed_in.identity
    set_default_session(signed_in)
    assert [e.name for e in MlflowClient().search_experiments(filter_string="name = 'Default'")] == ["Default"]


def _kid(token: str) -> str:
    from joserfc.jws import extract_compact

    return extract_compact(token.encode()).headers()["kid"]
