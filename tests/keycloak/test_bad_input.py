"""`stack/run up --idp keycloak` refusing bad input: one clear line saying what to do, and nothing left running."""

from __future__ import annotations

import socket

import pytest

from ..test_stack_lifecycle import processes_of
from ..test_stack_run_options import stack_run


def refused(run_dir, *args: str, env: dict[str, str] | None = None) -> str:
    answer = stack_run("up", "--idp", "keycloak", "--free-ports", "--run-dir", str(run_dir), *args, env=env)
    assert answer.returncode == 1, answer.stdout + answer.stderr
    if (run_dir / "state.json").exists():
        assert processes_of(run_dir) == []
    assert not (run_dir / "endpoints.json").exists()
    return answer.stderr


def test_missing_java_is_one_line_naming_the_package(tmp_path):
    stderr = refused(tmp_path / "run", env={"JAVA_HOME": str(tmp_path / "no-java")})
    assert stderr.count("\n") == 1
    assert "Java 17" in stderr and "openjdk-17-jre-headless" in stderr


def test_a_version_maven_central_does_not_serve_is_one_line(tmp_path):
    env = {"MLFLOW_OIDC_KEYCLOAK_VERSION": "26.7.4", "MLFLOW_OIDC_STACK_CACHE": str(tmp_path / "cache")}
    stderr = refused(tmp_path / "run", env=env)
    assert stderr.count("\n") == 1
    assert "Keycloak 26.7.4 download failed (404" in stderr and "MLFLOW_OIDC_KEYCLOAK_VERSION" in stderr


def test_a_taken_port_is_one_line_naming_the_way_out(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr = refused(tmp_path / "run", "--port", f"idp={port}")
    assert stderr.count("\n") == 1
    assert f"port {port} for idp" in stderr and "--free-ports" in stderr


@pytest.mark.slow
def test_a_keycloak_that_fails_to_start_stops_everything_it_started(tmp_path):
    run_dir = tmp_path / "run"
    stderr = refused(run_dir, env={"JAVA_OPTS_KC_HEAP": "-Xmx1m"})  # the JVM refuses such a heap at once

    first = stderr.splitlines()[0]
    assert first.startswith("stack/run up: idp exited during start") and "logs/idp.log" in first
