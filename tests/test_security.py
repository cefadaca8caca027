"""Attacks on the real local stack (IdP, gate, nginx, MLflow with its server side): docs/security.md lists them.

bob has the Default role, alice the Admin role; every request goes through nginx and the gate unless a test says so.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from joserfc.jws import extract_compact

from .support.tokens import user_tokens

API = "/api/2.0/mlflow"


class User:
    """One signed-in user talking to MLflow's REST API through the proxy."""

    def __init__(self, stack, name: str) -> None:
        self.stack = stack
        self.name = name
        self.token = user_tokens(stack, name)["access_token"]
        self.claims = json.loads(extract_compact(self.token.encode()).payload)

    def call(self, method: str, path: str, body: dict | bytes | None = None, **headers: str) -> requests.Response:
        headers["Authorization"] = f"Bearer {self.token}"
        kwargs: dict = {"data": body} if isinstance(body, bytes) else {"json": body}
        if method == "GET" and isinstance(body, dict):
            kwargs = {"params": body}
        url = self.stack.mlflow_url + path
        return requests.request(method, url, headers=headers, timeout=30, allow_redirects=False, **kwargs)

    def ok(self, method: str, path: str, body: dict | bytes | None = None, **headers: str) -> dict:
        response = self.call(method, path, body, **headers)
        assert response.status_code == 200, (response.status_code, response.text[:300])
        return response.json() if response.content else {}


@pytest.fixture(scope="module")
def bob(stack) -> User:
    return User(stack, "bob")


@pytest.fixture(scope="module")
def alice(stack) -> User:
    return User(stack, "alice")


@pytest.fixture
def alices_run(alice: User) -> dict:
    experiment_id = alice.ok("POST", f"{API}/experiments/create", {"name": f"alice-{time.time_ns()}"})["experiment_id"]
    return alice.ok("POST", f"{API}/runs/create", {"experiment_id": experiment_id})["run"]["info"]


def tags_of(stack, run_id: str) -> dict[str, str]:
    run = stack.mlflow_behind_proxy(f"{API}/runs/get", run_id=run_id)["run"]
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def assert_denied(response: requests.Response, words: str) -> None:
    assert response.status_code == 403, (response.status_code, response.text[:300])
    assert response.json()["error_code"] == "PERMISSION_DENIED"
    assert words in response.json()["message"]


# ---------------------------------------------------------------------------------- identity on runs (finding 4)

FORGED = {"mlflow.user": "alice", "oidc.sub": "alice-sub", "oidc.issuer": "https://evil.example"}


def test_a_new_run_carries_the_verified_identity_whatever_the_client_claims(stack, bob: User, alices_run) -> None:
    body = {
        "experiment_id": alices_run["experiment_id"],
        "user_id": "alice",
        "tags": [{"key": k, "value": v} for k, v in FORGED.items()] + [{"key": "team", "value": "blue"}],
    }
    run = bob.ok("POST", f"{API}/runs/create", body)["run"]
    tags = tags_of(stack, run["info"]["run_id"])
    assert tags["mlflow.user"] == "bob"
    assert tags["oidc.sub"] == bob.claims["sub"]
    assert tags["oidc.issuer"] == stack.issuer
    assert tags["team"] == "blue"
    assert run["info"]["user_id"] == "bob"


def test_identity_headers_sent_by_the_client_are_replaced_by_the_verified_ones(stack, bob: User, alices_run) -> None:
    spoof = {
        "X-Forwarded-User": "alice",
        "X-Forwarded-Subject": "alice-sub",
        "X-Forwarded-Issuer": "https://evil.example",
        "X-Forwarded-Roles": "Admin",
        "X-Forwarded-Permissions": "overwrite-artifacts",
    }
    run = bob.ok("POST", f"{API}/runs/create", {"experiment_id": alices_run["experiment_id"]}, **spoof)["run"]
    tags = tags_of(stack, run["info"]["run_id"])
    assert (tags["mlflow.user"], tags["oidc.sub"], tags["oidc.issuer"]) == ("bob", bob.claims["sub"], stack.issuer)


@pytest.mark.parametrize(
    ("path", "make_body"),
    [
        ("runs/set-tag", lambda run_id, key: {"run_id": run_id, "key": key, "value": "bob"}),
        ("runs/log-batch", lambda run_id, key: {"run_id": run_id, "tags": [{"key": key, "value": "bob"}]}),
        ("runs/log-batch", lambda run_id, key: json.dumps({"run_id": run_id, "tags": [{"key": key, "value": "x"}]})),
    ],
    ids=["set-tag", "log-batch", "log-batch-double-encoded"],
)
@pytest.mark.parametrize("key", ["mlflow.user", "oidc.sub", "oidc.issuer"])
def test_nobody_can_change_the_identity_tags_of_a_run(
    stack, bob: User, alice: User, alices_run, path: str, make_body: Callable, key: str
) -> None:
    before = tags_of(stack, alices_run["run_id"])
    for user in (bob, alice):
        assert_denied(user.call("POST", f"{API}/{path}", make_body(alices_run["run_id"], key)), "set by the tracking")
    assert tags_of(stack, alices_run["run_id"]) == before
    assert before["mlflow.user"] == "alice"


def test_ordinary_tags_and_metrics_still_work(stack, bob: User, alices_run) -> None:
    bob.ok("POST", f"{API}/runs/set-tag", {"run_id": alices_run["run_id"], "key": "note", "value": "seen"})
    metric = {"key": "loss", "value": 0.5, "timestamp": 1, "step": 0}
    batch = {"run_id": alices_run["run_id"], "metrics": [metric], "tags": [{"key": "phase", "value": "2"}]}
    bob.ok("POST", f"{API}/runs/log-batch", batch)
    assert {"note": "seen", "phase": "2"}.items() <= tags_of(stack, alices_run["run_id"]).items()


def test_a_logged_model_carries_the_verified_identity(stack, bob: User, alices_run) -> None:
    body = {"experiment_id": alices_run["experiment_id"], "tags": [{"key": "mlflow.user", "value": "alice"}]}
    model = bob.ok("POST", f"{API}/logged-models", body)["model"]
    tags = {t["key"]: t["value"] for t in model["info"].get("tags", [])}
    assert tags["mlflow.user"] == "bob"
    model_id = model["info"]["model_id"]
    forged = {"tags": [{"key": "mlflow.user", "value": "alice"}]}
    assert_denied(bob.call("PATCH", f"{API}/logged-models/{model_id}/tags", forged), "set by the tracking")


# ---------------------------------------------------------------------------- destructive acts (findings 1-3)


def _artifact_url(run: dict, name: str) -> str:
    return f"/api/2.0/mlflow-artifacts/artifacts/{run['experiment_id']}/{run['run_id']}/artifacts/{name}"


def test_default_user_cannot_overwrite_an_existing_artifact(stack, bob: User, alice: User, alices_run) -> None:
    url = _artifact_url(alices_run, "model/weights.bin")
    alice.ok("PUT", url, b"alice's weights")
    assert_denied(bob.call("PUT", url, b""), "exists; replacing it needs the overwrite-artifacts permission")
    assert_denied(bob.call("PUT", url.replace("/api/", "/ajax-api/"), b"x"), "exists")
    assert_denied(bob.call("PUT", url.replace("model/", "model//"), b"x"), "exists")
    spoof = {"X-Forwarded-Permissions": "overwrite-artifacts", "X-Forwarded-Roles": "Admin"}
    assert_denied(bob.call("PUT", url, b"x", **spoof), "which bob does not have")
    ui_upload = f"/ajax-api/2.0/mlflow/upload-artifact?run_uuid={alices_run['run_id']}&path=model/weights.bin"
    assert_denied(bob.call("POST", ui_upload, b"x", **{"Content-Type": "application/octet-stream"}), "exists")
    assert bob.call("GET", url).content == b"alice's weights"


def test_default_user_may_add_new_artifacts_and_admin_may_overwrite(stack, bob: User, alice: User, alices_run) -> None:
    url = _artifact_url(alices_run, "notes.txt")
    bob.ok("PUT", url, b"first")
    alice.ok("PUT", url, b"second")
    assert bob.call("GET", url).content == b"second"


def test_default_user_cannot_restore_what_an_admin_deleted(stack, bob: User, alice: User, alices_run) -> None:
    run_id, experiment_id = alices_run["run_id"], alices_run["experiment_id"]
    alice.ok("POST", f"{API}/runs/delete", {"run_id": run_id})
    assert_denied(bob.call("POST", f"{API}/runs/restore", {"run_id": run_id}), "role Admin required to restore")
    alice.ok("POST", f"{API}/experiments/delete", {"experiment_id": experiment_id})
    response = bob.call("POST", f"{API}/experiments/restore", {"experiment_id": experiment_id})
    assert_denied(response, "role Admin required to restore deleted objects")
    experiment = stack.mlflow_behind_proxy(f"{API}/experiments/get", experiment_id=experiment_id)["experiment"]
    assert experiment["lifecycle_stage"] == "deleted"


def test_default_user_uses_aliases_but_cannot_rename_or_delete_models(stack, bob: User, alice: User) -> None:
    name = f"model-{time.time_ns()}"
    alice.ok("POST", f"{API}/registered-models/create", {"name": name})
    bob.ok("POST", f"{API}/model-versions/create", {"name": name, "source": "s3://nowhere/model"})
    bob.ok("POST", f"{API}/registered-models/alias", {"name": name, "alias": "champion", "version": "1"})
    version = bob.ok("GET", f"{API}/registered-models/alias", {"name": name, "alias": "champion"})
    assert version["model_version"]["version"] == "1"
    response = bob.call("POST", f"{API}/registered-models/rename", {"name": name, "new_name": f"{name}-gone"})
    assert_denied(response, "role Admin required to rename experiments and registered models")
    assert_denied(bob.call("DELETE", f"{API}/registered-models/alias", {"name": name, "alias": "champion"}),
                  "role Admin required to delete")  # fmt: skip
    alice.ok("POST", f"{API}/registered-models/rename", {"name": name, "new_name": f"{name}-renamed"})


def test_default_user_cannot_rename_an_experiment_but_may_rename_a_run(stack, bob: User, alices_run) -> None:
    response = bob.call("POST", f"{API}/experiments/update", {"experiment_id": alices_run["experiment_id"],
                                                               "new_name": "taken"})  # fmt: skip
    assert_denied(response, "role Admin required to rename")
    bob.ok("POST", f"{API}/runs/update", {"run_id": alices_run["run_id"], "run_name": "relabelled"})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/gateway/remove-pii/mlflow/invocations"),
        ("GET", "/ajax-api/3.0/mlflow/mcp-servers/purge-helper"),
        ("GET", "/ajax-api/3.0/mlflow/gateway/endpoints/get?endpoint_id=delete-me"),
    ],
)
def test_names_users_choose_are_not_judged_as_routes(bob: User, method: str, path: str) -> None:
    response = bob.call(method, path, {} if method == "POST" else None)
    # MLflow itself answers (no such object, or no gateway configured): never the gate's role refusal.
    assert "role Admin required" not in response.text
    assert response.status_code != 403


# ---------------------------------------------------------------------------- MLflow's own port (finding 7)


def test_mlflow_listens_only_on_a_socket_in_the_private_run_folder(stack) -> None:
    socket_path = stack.run_dir / "mlflow.sock"
    assert stat.S_ISSOCK(os.stat(socket_path).st_mode)
    assert stat.S_IMODE(os.stat(stack.run_dir).st_mode) == 0o700
    assert "mlflow_upstream" not in stack.endpoints
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", stack.endpoints["ports"]["mlflow"])) != 0


def test_in_compose_only_nginx_and_the_stores_share_a_network_with_mlflow() -> None:
    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "stack" / "compose.yaml").read_text())

    def networks(service: dict) -> set[str]:
        return set(service.get("networks") or ["default"])

    services = compose["services"]
    reach = {name for name, s in services.items() if name != "mlflow" and networks(s) & networks(services["mlflow"])}
    assert reach == {"nginx", "postgres", "object-store"}
