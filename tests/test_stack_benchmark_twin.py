"""The benchmarks' stack as shipped: nginx reaches MLflow over its socket; "direct" is a twin MLflow ended by PID."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
import requests

from stack.processes import group_alive

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import benchlib  # noqa: E402 - bench/ is a folder of scripts, not a package

pytestmark = pytest.mark.stack

# The options that say where an `mlflow server` listens; everything else of the two commands must be the same.
LISTEN_OPTIONS = ("--host", "--port", "--uvicorn-opts")


def without_listen(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LISTEN_OPTIONS:
            skip = True
        else:
            kept.append(arg)
    return kept


def test_benchmark_goes_through_the_socket_and_stops_its_direct_mlflow_by_pid_when_it_fails() -> None:
    body = os.urandom(3 << 20)
    with (
        pytest.raises(RuntimeError, match="midway"),
        benchlib.local_stack({"IDP_ACCESS_TOKEN_TTL": "600"}, upstream="uds") as (stack, endpoints),
    ):
        twin_pid = endpoints["mlflow_direct_pid"]
        mlflow_pid = stack.running()["mlflow"]["pid"]
        token = benchlib.bot_token(endpoints)
        through_nginx = benchlib.artifact_url(endpoints["mlflow_url"], "twin.bin")
        put = requests.put(through_nginx, data=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert put.status_code == 200, put.text

        # nginx was configured with, and kept its connection open on, the socket: the stack's MLflow has no TCP.
        assert (
            f"server unix:{endpoints['mlflow_socket']};"
            in (stack.layout.run_dir / "nginx" / "mlflow-proxy.conf").read_text()
        )
        seen = benchlib.connections(mlflow_pid, endpoints["mlflow_socket"])
        assert seen["unix"] >= 1 and seen["tcp"] == 0, seen
        # "Direct" is another process with the same command but where it listens, sharing the artifact folder.
        assert twin_pid != mlflow_pid
        assert endpoints["mlflow_upstream"].startswith("http://127.0.0.1:")
        direct = requests.get(benchlib.artifact_url(endpoints["mlflow_upstream"], "twin.bin"), timeout=60)
        assert direct.status_code == 200 and direct.content == body
        commands = [psutil.Process(pid).cmdline() for pid in (mlflow_pid, twin_pid)]
        assert "--uvicorn-opts" in commands[0] and "--uvicorn-opts" not in commands[1]
        assert without_listen(commands[0]) == without_listen(commands[1])
        raise RuntimeError("a benchmark failing midway")

    assert not group_alive(twin_pid)
    assert not group_alive(mlflow_pid)
