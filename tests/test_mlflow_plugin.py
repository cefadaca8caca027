"""MLflow through the identity-aware proxy with MLFLOW_TRACKING_AUTH=oidc: auth, retries, errors, run tags."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_oidc_jupyter.mlflow_plugin import OIDCAuthProvider, OIDCBearerAuth
from mlflow_oidc_jupyter.oidc import Session, set_default_session

from .support.oidc_sessions import browser_sign_in, settings_for


@pytest.fixture
def as_user(stack, tmp_path, monkeypatch):
    """Sign a user in and make MLflow in this process use that session through the proxy."""
    sessions: list[Session] = []
    monkeypatch.setenv("MLFLOW_TRACKING_AUTH", "oidc")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    mlflow.set_tracking_uri(stack.mlflow_url)

    def sign_in(username: str) -> Session:
        session = Session(settings_for(stack, tmp_path / f"cache-{username}"))
        browser_sign_in(session, stack, username)
        set_default_session(session)
        sessions.append(session)
        return session

    yield sign_in
    set_default_session(None)
    mlflow.set_tracking_uri(None)
    for session in sessions:
        session.close()


def test_the_plugin_is_registered_under_the_name_oidc():
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    assert any(isinstance(p, OIDCAuthProvider) for p in _request_auth_provider_registry)
    assert OIDCAuthProvider().get_name() == "oidc"


def test_runs_artifacts_and_registry_work_through_the_proxy_and_runs_name_the_verified_user(as_user, stack, tmp_path):
    alice = as_user("alice")
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    mlflow.set_experiment(f"plugin-{time.time_ns()}")

    with mlflow.start_run() as run:
        mlflow.log_param("lr", 0.1)
        mlflow.log_metric("loss", 0.5)
        mlflow.log_artifact(str(data), artifact_path="inputs")
        mlflow.log_text("hello", "notes/hello.txt")
    client = MlflowClient()
    listed = [f.path for f in client.list_artifacts(run.info.run_id, "inputs")]
    downloaded = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "dl"))
    name = f"model-{time.time_ns()}"
    client.create_registered_model(name, tags={"team": "core"})
    version = client.create_model_version(name, f"{run.info.artifact_uri}/inputs", run_id=run.info.run_id)

    assert listed == ["inputs/data.bin"]
    assert (Path(downloaded) / "inputs" / "data.bin").read_bytes() == data.read_bytes()
    assert (Path(downloaded) / "notes" / "hello.txt").read_text() == "hello"
    assert client.get_registered_model(name).tags == {"team": "core"}
    assert client.get_model_version(name, version.version).run_id == run.info.run_id
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow.user"] == "alice"
    assert tags["oidc.sub"] == alice.identity.subject
    assert tags["oidc.issuer"] == stack.issuer


def test_a_rejected_token_is_refreshed_once_and_the_file_upload_resent(as_user, tmp_path):
    alice = as_user("alice")
    tokens = alice._tokens
    # A token the proxy will refuse (as after a server-side revocation), while the refresh token still works.
    alice.sign_in(dataclasses.replace(tokens, access_token="refused-token", expires_at=time.time() + 3600))
    data = tmp_path / "upload.bin"
    data.write_bytes(os.urandom(1024 * 1024))
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment(f"resend-{time.time_ns()}")).info.run_id

    client.log_artifact(run_id, str(data))

    assert alice.refresh_count == 1
    got = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="upload.bin", dst_path=str(tmp_path / "d"))
    assert Path(got).read_bytes() == data.read_bytes()


def test_the_token_goes_only_to_the_tracking_server(as_user, stack):
    alice = as_user("alice")
    with _recording_server() as other:
        requests.get(f"{other.url}/api/2.0/mlflow/experiments/search", auth=OIDCBearerAuth(alice), timeout=5)
    answer = requests.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", auth=OIDCBearerAuth(alice), timeout=10
    )

    assert "Authorization" not in other.headers[0]
    assert answer.status_code == 200


def test_a_redirect_to_a_sign_in_page_is_reported_as_such(as_user, stack, monkeypatch):
    as_user("alice")
    with _recording_server(status=302, location=f"{stack.issuer}/auth?client_id=jupyter") as proxy:
        mlflow.set_tracking_uri(proxy.url)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy.url)
        with pytest.raises(MlflowException) as error:
            MlflowClient().search_experiments()

    assert "redirected" in str(error.value) and "sign-in page" in str(error.value)
    assert "not in a valid JSON format" not in str(error.value)


def test_a_default_role_user_is_refused_deletion_with_the_proxys_reason(as_user):
    as_user("alice")
    experiment = MlflowClient().create_experiment(f"keep-{time.time_ns()}")
    as_user("bob")

    with pytest.raises(MlflowException) as refused:
        MlflowClient().delete_experiment(experiment)

    assert refused.value.error_code == "PERMISSION_DENIED"


def test_run_tags_come_only_from_an_existing_session(tmp_path, stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_OIDC_", "MLFLOW_TRACKING_"))}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "c"), XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    probe = "from mlflow_oidc_jupyter.mlflow_plugin import OIDCRunContextProvider as P; print(P().in_context())"

    plain = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    configured = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "MLFLOW_TRACKING_AUTH": "oidc", "MLFLOW_OIDC_ISSUER": stack.issuer, "MLFLOW_OIDC_CLIENT_ID": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert (plain.stdout.strip(), configured.stdout.strip()) == ("False", "False"), plain.stderr + configured.stderr


def test_no_token_appears_in_logs_errors_or_reprs(stack, tmp_path):
    cache = tmp_path / "cache"
    session = Session(settings_for(stack, cache), background_refresh=False)
    browser_sign_in(session, stack, "alice")
    tokens = session._tokens
    script = """
import logging, mlflow, sys
logging.basicConfig(level=logging.DEBUG)
from mlflow import MlflowClient
from mlflow_oidc_jupyter.oidc import get_default_session
s = get_default_session()
client = MlflowClient()
client.search_experiments(max_results=1)
s.refresh()
client.search_experiments(max_results=1)
print(repr(s), s.snapshot(), s._tokens, s.settings)
s.client.revoke(s._tokens.refresh_token)
try:
    s.refresh()
except Exception as exc:
    print(repr(exc), exc)
"""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_AUTH": "oidc",
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
        "MLFLOW_OIDC_ISSUER": stack.issuer,
        "MLFLOW_OIDC_CLIENT_ID": "jupyter",
        "MLFLOW_OIDC_CACHE_DIR": str(cache),
    }
    cached = json.loads(next(cache.glob("tokens-*.json")).read_text())["tokens"]

    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-2000:]
    assert "LoginRequired" in output and "DEBUG" in output
    secrets = [tokens.access_token, tokens.refresh_token, tokens.id_token, cached["access_token"]]
    secrets += [cached["refresh_token"], cached["id_token"]]
    for secret in secrets:
        assert secret[-24:] not in output
    assert tokens.access_token[-24:] not in repr(session) + repr(tokens) + repr(session.snapshot())


class _Recorder:
    def __init__(self, server: ThreadingHTTPServer, headers: list[dict]) -> None:
        self.server, self.headers = server, headers
        self.url = f"http://127.0.0.1:{server.server_address[1]}"


class _recording_server:  # noqa: N801 - used as a context manager, reads like a function
    """A real HTTP server on loopback that records request headers and answers with a fixed status."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        headers: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                headers.append(dict(self.headers))
                body = b'{"experiments": []}'
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.recorder = _Recorder(ThreadingHTTPServer(("127.0.0.1", 0), Handler), headers)

    def __enter__(self) -> _Recorder:
        threading.Thread(target=self.recorder.server.serve_forever, daemon=True).start()
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        self.recorder.server.shutdown()
        self.recorder.server.server_close()
