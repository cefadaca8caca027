"""`mlflow-oidc` in a terminal: sign in once, then any MLflow script authenticates."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests

from mlflow_oidc_jupyter.oidc import TokenCache

from .support.idp_pages import approve_device, authorize

CLI = str(Path(sys.executable).parent / "mlflow-oidc")


@pytest.fixture
def env(stack, isolated_home) -> dict[str, str]:
    """A terminal of a user with the three settings exported and nothing cached yet."""
    return {
        **os.environ,
        "MLFLOW_OIDC_ISSUER": stack.issuer,
        "MLFLOW_OIDC_CLIENT_ID": "jupyter",
        "MLFLOW_TRACKING_URI": stack.mlflow_url,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def login_interactively(env: dict[str, str], args: list[str], complete) -> tuple[int, str]:
    """Run `mlflow-oidc login ...`, hand the first URL it prints to `complete`, return exit code and stderr."""
    proc = subprocess.Popen([CLI, "login", *args], env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        found = re.search(r"(http://\S+)", line)
        if found:
            threading.Thread(target=complete, args=(found.group(1),)).start()
            break
    lines.extend(proc.stderr)
    return proc.wait(timeout=120), "".join(lines)


def test_device_login_then_status_token_env_and_a_plain_mlflow_script(stack, env, isolated_home, tmp_path):
    code, shown = login_interactively(env, [], lambda url: approve_device(url, "alice", stack.password("alice")))

    assert code == 0, shown
    assert re.search(r"code [A-Z]{4}-[A-Z]{4}", shown) and "Signed in" in shown and "alice (roles: Admin)" in shown

    status = cli(env, "status")
    assert status.returncode == 0
    assert re.search(r"user\s+alice", status.stdout) and re.search(r"roles\s+Admin", status.stdout)
    assert "expires" in status.stdout

    token = cli(env, "token").stdout.strip()
    assert token.count(".") == 2 and token not in status.stdout + shown
    api = requests.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert api.status_code == 200

    exports = cli(env, "env").stdout
    assert "export MLFLOW_TRACKING_AUTH=oidc" in exports and f"export MLFLOW_OIDC_ISSUER={stack.issuer}" in exports
    train = tmp_path / "train.py"
    train.write_text(
        "import mlflow\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('acc', 0.9)\n"
        "print(mlflow.get_run(run.info.run_id).data.tags['mlflow.user'])\n"
    )
    bare = {k: v for k, v in env.items() if not k.startswith(("MLFLOW_OIDC_", "MLFLOW_TRACKING_"))}
    script = subprocess.run(
        ["bash", "-c", f'eval "$({CLI} env)" && {sys.executable} {train}'],
        env={**bare, **{k: env[k] for k in ("MLFLOW_OIDC_ISSUER", "MLFLOW_OIDC_CLIENT_ID", "MLFLOW_TRACKING_URI")}},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert script.returncode == 0, script.stderr[-2000:]
    assert script.stdout.strip().splitlines()[-1] == "alice"

    cache = isolated_home / ".cache" / "mlflow-oidc"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in cache.iterdir()} == {0o600}

    stored = TokenCache(cache)
    id_token = stored.load(stored.current_key(env["MLFLOW_OIDC_ISSUER"], env["MLFLOW_OIDC_CLIENT_ID"])).id_token
    logout = cli(env, "logout")
    assert logout.returncode == 0 and "Signed out alice" in logout.stderr and "/session/end?" in logout.stderr
    assert "id_token_hint" not in logout.stderr and id_token and id_token not in logout.stderr + logout.stdout
    assert not list(cache.glob("tokens-*.json"))
    after = cli(env, "token")
    assert after.returncode == 3 and after.stdout == "" and "mlflow-oidc login" in after.stderr
    assert cli(env, "status").returncode == 3


def test_browser_login_prints_the_url_when_no_browser_is_opened(stack, env):
    def sign_in(url: str) -> None:
        requests.get(authorize(url, "bob", stack.password("bob")), timeout=10)

    code, shown = login_interactively(env, ["--browser", "--no-open"], sign_in)

    assert code == 0, shown
    assert "open this URL" in shown and "bob (roles: Default)" in shown


def test_client_credentials_login_for_a_bot(stack, env):
    bot = stack.endpoints["clients"]["ci-bot"]
    bot_env = {**env, "MLFLOW_OIDC_CLIENT_ID": bot["client_id"], "MLFLOW_OIDC_CLIENT_SECRET": bot["client_secret"]}

    login = cli(bot_env, "login", "--client-credentials")
    status = cli(bot_env, "status")

    assert login.returncode == 0 and "ci-bot" in login.stderr
    assert re.search(r"user\s+ci-bot", status.stdout)
    assert bot["client_secret"] not in login.stdout + login.stderr + status.stdout + status.stderr


def test_a_missing_setting_is_named_with_how_to_set_it(isolated_home):
    result = subprocess.run(
        [CLI, "status"], env={**os.environ, "MLFLOW_OIDC_CLIENT_ID": "jupyter"}, capture_output=True, text=True
    )

    assert result.returncode == 2
    assert "`issuer` is missing" in result.stderr and "MLFLOW_OIDC_ISSUER" in result.stderr
