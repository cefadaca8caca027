"""`stack/run` as the README writes it: options after the command, and restarts that keep the stack's lifetimes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
STACK_RUN = str(ROOT / "stack" / "run")


def stack_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([STACK_RUN, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})  # fmt: skip


def bot_token_lifetime(run_dir: Path) -> int:
    endpoints = json.loads((run_dir / "endpoints.json").read_text())
    bot = endpoints["clients"]["ci-bot"]
    answer = requests.post(f"{endpoints['issuer']}/token", data={"grant_type": "client_credentials"},
                           auth=(bot["client_id"], bot["client_secret"]), timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return int(answer.json()["expires_in"])


def test_options_after_the_command_and_a_restart_that_remembers_the_token_lifetimes(tmp_path):
    run_dir = tmp_path / "run"
    try:
        up = stack_run("up", "--free-ports", "--run-dir", str(run_dir), env={"IDP_ACCESS_TOKEN_TTL": "77"})
        assert up.returncode == 0, up.stderr
        assert bot_token_lifetime(run_dir) == 77

        # Another shell, without the variable: the IdP comes back with the lifetimes the stack was started with.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
        restarted = subprocess.run([STACK_RUN, "restart", "idp", "--run-dir", str(run_dir)], capture_output=True,
                                   text=True, timeout=300, env=clean)  # fmt: skip

        assert restarted.returncode == 0, restarted.stderr
        assert bot_token_lifetime(run_dir) == 77
        status = stack_run("status", "--run-dir", str(run_dir))
        assert status.returncode == 0 and "idp" in status.stdout
    finally:
        down = stack_run("down", "--run-dir", str(run_dir))
    assert down.returncode == 0, down.stderr
