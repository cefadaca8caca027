"""Our CLI and a plain MLflow script against mlflow-oidc-auth: same user on both sides, denials that say why."""

from __future__ import annotations

import json
import re
import uuid

import pytest

pytestmark = pytest.mark.slow

TRAIN = """
import json, sys, mlflow
mlflow.set_experiment(sys.argv[1])
with mlflow.start_run() as run:
    mlflow.log_param("lr", 0.01)
    for step in range(3):
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    mlflow.log_text("hello from the script", "notes/hello.txt")
got = mlflow.get_run(run.info.run_id)
artifact = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hello.txt")
found = mlflow.search_runs(experiment_ids=[run.info.experiment_id], output_format="list")
print(json.dumps({"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                  "user": got.data.tags["mlflow.user"], "loss": got.data.metrics["loss"],
                  "artifact": artifact, "found": [r.info.run_id for r in found]}))
"""

#: MLflow calls that fail print what the user would read, instead of a traceback.
TRY = """
import sys, mlflow
from mlflow.tracking import MlflowClient
try:
    CALL
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
else:
    print("no error")
"""


def run_and_read(terminal, tmp_path, call: str) -> str:
    script = tmp_path / "call.py"
    script.write_text(TRY.replace("CALL", call))
    result = terminal.python(script)
    return result.stdout + result.stderr


def test_cli_login_then_a_plain_script_logs_as_the_user_the_server_knows(terminal, oidc_auth, tmp_path):
    shown = terminal.login("bob")
    script = tmp_path / "train.py"
    script.write_text(TRAIN.replace("sys.argv[1]", repr(f"bob-{uuid.uuid4().hex[:8]}")))

    result = terminal.python(script)

    # Who our client says is signed in: the provider's user, with the provider's roles.
    signed_in = re.search(r"Signed in to (\S+) as (\S+) \(roles: ([^)]*)\)", shown)
    assert signed_in, shown
    assert signed_in.groups()[:2] == (oidc_auth.issuer, "bob"), shown
    assert "Default" in signed_in.group(3).split(", ") and "Admin" not in signed_in.group(3), shown
    if oidc_auth.keycloak is not None:  # the realm's own record of that user
        assert oidc_auth.keycloak.admin.user("bob")["username"] == signed_in.group(2)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["user"] == "bob" and out["loss"] == pytest.approx(1 / 3)
    assert out["artifact"] == "hello from the script" and out["found"] == [out["run_id"]]
    # The server's side of the same identity: who it says is calling, and whom it made the experiment's manager.
    assert terminal.api("GET", "/api/2.0/mlflow/users/current").json()["username"] == "bob"
    managers = terminal.api("GET", f"/api/2.0/mlflow/permissions/experiments/{out['experiment_id']}/users")
    assert managers.status_code == 200, managers.text
    assert {(u["name"], u["permission"]) for u in managers.json()} >= {("bob", "MANAGE")}


def test_a_user_without_permission_sees_the_servers_reason(make_terminal, tmp_path):
    alice, bob = make_terminal("alice"), make_terminal("bob")
    alice.login("alice")
    bob.login("bob")
    created = alice.api("POST", "/api/2.0/mlflow/experiments/create", json={"name": f"alice-{uuid.uuid4().hex[:8]}"})
    assert created.status_code == 200, created.text

    said = run_and_read(bob, tmp_path, f"MlflowClient().create_run({created.json()['experiment_id']!r})")

    assert "Permission denied" in said and "bob" in said, said[-3000:]  # the server's reason, and who was refused
    assert "INTERNAL_ERROR" not in said and "mlflow-oidc login" not in said  # signing in again cannot help


def test_a_user_the_server_turned_away_is_told_so_not_to_sign_in_again(oidc_auth, make_terminal, tmp_path):
    alice, bot = make_terminal("alice"), make_terminal("bot")
    alice.login("alice")
    bot.env.update(
        MLFLOW_OIDC_CLIENT_ID="ci-bot",
        MLFLOW_OIDC_CLIENT_SECRET=oidc_auth.endpoints["clients"]["ci-bot"]["client_secret"],
    )
    name = oidc_auth.service_account("ci-bot")
    assert bot.cli("login", "--client-credentials").returncode == 0
    assert bot.api("GET", "/api/2.0/mlflow/users/current").json()["username"] == name  # provisioned from its token
    # An admin deactivates the bot's account in mlflow-oidc-auth; its tokens stay valid at the provider.
    off = alice.api("PATCH", f"/api/2.0/mlflow/users/{name}/active", json={"active": False})
    assert off.status_code == 200, off.text

    said = run_and_read(bot, tmp_path, "mlflow.search_experiments()")

    assert "Authentication required" in said and name in said, said[-3000:]
    assert "INTERNAL_ERROR" not in said and "mlflow-oidc login" not in said
