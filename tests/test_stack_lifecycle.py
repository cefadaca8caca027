"""`stack/run` starts, reports and stops the stack, leaves no process behind, and fails clearly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = [str(ROOT / "stack" / "run")]  # the command people type

pytestmark = pytest.mark.stack


def stack_run(run_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, "--run-dir", str(run_dir), *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, **(env or {})})  # fmt: skip


def processes_of(run_dir: Path) -> list[psutil.Process]:
    """Every running process in the process groups that the stack recorded, children included (zombies are not)."""
    state = json.loads((run_dir / "state.json").read_text())
    groups = {entry["pid"] for entry in state["components"].values()}
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return found


def test_up_status_down_leaves_no_process_behind(tmp_path):
    run_dir = tmp_path / "run"
    try:
        up = stack_run(run_dir, "up", "--free-ports")
        assert up.returncode == 0, up.stderr
        assert "alice" in up.stdout and "bob" in up.stdout
        state = json.loads((run_dir / "state.json").read_text())
        pids = [proc.pid for proc in processes_of(run_dir)]
        assert len(pids) >= 4  # at least one process per component; MLflow and nginx have workers

        status = stack_run(run_dir, "status")
        assert status.returncode == 0
        assert [line.split()[:2] for line in status.stdout.splitlines()] == [
            ["idp", "running"], ["mlflow", "running"], ["gate", "running"], ["nginx", "running"],
        ]  # fmt: skip
    finally:
        down = stack_run(run_dir, "down")
    assert down.returncode == 0, down.stderr
    assert "nginx" in down.stdout
    assert processes_of(run_dir) == []
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not (run_dir / "endpoints.json").exists()
    for entry in state["components"].values():
        assert Path(entry["log"]).exists()
    assert stack_run(run_dir, "status").returncode == 3


def test_taken_port_is_named_and_nothing_starts(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        up = stack_run(tmp_path / "run", "up", "--free-ports", "--port", f"nginx={port}")
    assert up.returncode == 1
    assert f"port {port} for nginx" in up.stderr
    assert "STACK_NGINX_PORT" in up.stderr


def test_component_that_fails_to_start_shows_its_log_and_the_rest_is_stopped(tmp_path):
    run_dir = tmp_path / "run"
    up = stack_run(run_dir, "up", "--free-ports", env={"STACK_GATE_POLICY": str(tmp_path / "no-such-policy.yaml")})
    assert up.returncode == 1
    assert "gate exited during start" in up.stderr
    assert "no-such-policy.yaml" in up.stderr  # the gate's own complaint, from its log tail
    assert processes_of(run_dir) == []
