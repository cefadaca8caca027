"""The local stack: only valid tokens pass the proxy, deletes need Admin, bodies stream, nothing is left running."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path

import mlflow
import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .support.tokens import bot_token, user_tokens

EXPERIMENTS_SEARCH = "/api/2.0/mlflow/experiments/search"


def _search(stack, token: str | None, **headers) -> requests.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{stack.mlflow_url}{EXPERIMENTS_SEARCH}", params={"max_results": 5},
                        headers=headers, timeout=10)  # fmt: skip


def _assert_unauthenticated(response: requests.Response) -> dict:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED"
    assert body["message"]
    return body


@pytest.fixture
def as_user(stack, monkeypatch):
    """Point MLflow's own client at the proxy with a user's bearer token (MLflow's built-in token support)."""

    def use(token: str) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mlflow.set_tracking_uri(stack.mlflow_url)
        return MlflowClient(stack.mlflow_url)

    yield use
    mlflow.set_tracking_uri(None)


def test_request_without_token_is_refused_with_mlflow_style_json(stack):
    _assert_unauthenticated(_search(stack, None))


def test_token_signed_by_another_key_is_refused(stack):
    real = user_tokens(stack, "bob")["access_token"]
    verified = jwt.decode(real, KeySet.import_key_set(requests.get(_jwks_uri(stack), timeout=10).json()))
    kid = verified.header.get("kid")
    forged = jwt.encode(
        {"alg": "RS256", "kid": kid}, verified.claims, RSAKey.generate_key(2048, parameters={"kid": kid})
    )
    _assert_unauthenticated(_search(stack, forged))


def test_id_token_is_not_an_access_token_for_mlflow(stack):
    # Signed by the real IdP key, but its audience is the client, not "mlflow".
    id_token = user_tokens(stack, "bob")["id_token"]
    body = _assert_unauthenticated(_search(stack, id_token))
    assert "aud" in body["message"].lower()


def test_expired_token_is_refused(make_stack):
    short = make_stack(env={"IDP_ACCESS_TOKEN_TTL": "2", "STACK_GATE_LEEWAY": "1"}, name="short-access")
    token = user_tokens(short, "bob")["access_token"]
    assert _search(short, token).status_code == 200
    expires = jwt.decode(token, KeySet.import_key_set(requests.get(_jwks_uri(short), timeout=10).json())).claims["exp"]
    # The gate compares whole seconds: expired once int(now) is past exp + leeway (1 s here).
    time.sleep(max(0.0, expires + 1 + 1.2 - time.time()))
    body = _assert_unauthenticated(_search(short, token))
    assert "expired" in body["message"].lower()


def test_default_user_may_log_but_not_delete(stack, as_user):
    client = as_user(user_tokens(stack, "bob")["access_token"])
    experiment_id = client.create_experiment(f"bob-{time.time_ns()}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.25)
    assert client.get_metric_history(run.info.run_id, "loss")[0].value == 0.25

    with pytest.raises(MlflowException) as denied:
        client.delete_experiment(experiment_id)
    assert "PERMISSION_DENIED" in str(denied.value)
    assert "Admin" in str(denied.value)
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"

    with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        client.delete_run(run.info.run_id)


def test_admin_may_delete(stack, as_user):
    client = as_user(user_tokens(stack, "alice")["access_token"])
    experiment_id = client.create_experiment(f"alice-{time.time_ns()}")
    client.delete_experiment(experiment_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"


def test_bot_logs_with_client_credentials(stack, as_user):
    client = as_user(bot_token(stack)["access_token"])
    experiment_id = client.create_experiment(f"bot-{time.time_ns()}")
    run = client.create_run(experiment_id)
    client.log_param(run.info.run_id, "by", "ci-bot")
    assert client.get_run(run.info.run_id).data.params == {"by": "ci-bot"}


def test_access_log_names_the_verified_user_and_never_the_token(stack):
    token = user_tokens(stack, "bob")["access_token"]
    marker = f"/api/2.0/mlflow/experiments/no-such-route-{time.time_ns()}"
    requests.get(f"{stack.mlflow_url}{marker}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    access_log = stack.access_log(until=marker)
    line = next((entry for entry in access_log.splitlines() if marker in entry), None)
    assert line is not None, "the request is missing from nginx's access log"
    assert "bob" in line
    assert token not in access_log


def test_large_artifact_round_trip_is_byte_identical(stack, as_user, tmp_path):
    client = as_user(user_tokens(stack, "bob")["access_token"])
    source = tmp_path / "big.bin"
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(source, "wb") as handle:
        for index in range(200):
            block = chunk[index:] + chunk[:index]  # no two MiB alike, so a dropped or repeated block shows
            handle.write(block)
            digest.update(block)
    experiment_id = client.create_experiment(f"big-{time.time_ns()}")
    run = client.create_run(experiment_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts must go through the proxy"

    client.log_artifact(run.info.run_id, str(source))
    listed = {item.path: item.file_size for item in client.list_artifacts(run.info.run_id)}
    assert listed == {"big.bin": 200 << 20}

    target = Path(client.download_artifacts(run.info.run_id, "big.bin", str(tmp_path / "down")))
    received = hashlib.sha256()
    with open(target, "rb") as handle:
        while block := handle.read(1 << 20):
            received.update(block)
    assert received.hexdigest() == digest.hexdigest()
    # Streamed both ways: nginx never spooled either body to disk. It removes temp files when a request ends, but
    # warns when it writes one ("a client request body is buffered to a temporary file", "an upstream response is
    # buffered to a temporary file").
    assert "to a temporary file" not in (stack.run_dir / "nginx" / "error.log").read_text()


def test_endpoints_file_describes_the_stack(stack):
    endpoints = json.loads((stack.run_dir / "endpoints.json").read_text())
    assert endpoints["issuer"] == stack.issuer
    assert set(endpoints["users"]) == {"alice", "bob"}
    assert endpoints["clients"]["jupyter"]["client_id"] == "jupyter"
    assert endpoints["clients"]["ci-bot"]["client_secret"]
    for url in (endpoints["issuer"], endpoints["mlflow_url"]):
        assert re.match(r"^http://127\.0\.0\.1:\d+$", url)
    assert (stack.run_dir / "endpoints.json").stat().st_mode & 0o077 == 0


def _jwks_uri(stack) -> str:
    return requests.get(f"{stack.issuer}/.well-known/openid-configuration", timeout=10).json()["jwks_uri"]
