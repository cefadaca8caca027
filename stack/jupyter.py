"""A Jupyter server (or JupyterLab) with mlflow-oidc-jupyter on loopback: started in its own group, awaited, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .ports import HOST
from .processes import record, spawn, stop_group
from .waiting import wait_healthy

#: Logged by the extension's start hook (after the port is bound): from then on kernels get the broker.
STARTED_MARKS = ("MLflow kernel broker at", "MLflow UI at")


def jupyter_argv(
    app: str, *, port: int, token: str, root_dir: Path, base_url: str = "/", extra: Iterable[str] = ()
) -> list[str]:
    """The command line of `python -m <app>` (jupyter_server, jupyterlab) on HOST:port with `token`."""
    argv = [
        sys.executable, "-m", app, "--no-browser", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.base_url={base_url}", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}", *extra,
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")  # machines like CI's run everything as root
    return argv


def extension_args(endpoints: Mapping, upstream_url: str | None = None) -> list[str]:
    """Point the extension at a stack's IdP and tracking server (`upstream_url`: another tracking server)."""
    return [
        f"--MLflowOIDC.issuer={endpoints['issuer']}",
        f"--MLflowOIDC.upstream_url={upstream_url or endpoints['mlflow_url']}",
        f"--MLflowOIDC.client_id={endpoints['clients']['jupyter']['client_id']}",
        f"--MLflowOIDC.audience={endpoints['audience']}",
    ]


def isolated_env(home: Path, runtime_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without the user's MLflow/OIDC/Jupyter settings, with a HOME (and token cache) of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_OIDC_", "MLFLOW_TRACKING_", "JUPYTER"))}
    env.update(
        HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), XDG_CONFIG_HOME=str(home / ".config"),
        JUPYTER_RUNTIME_DIR=str(runtime_dir), MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1", **extra,
    )  # fmt: skip
    return env


class JupyterProcess:
    """One Jupyter server process: `url` is its root (ending in `/`), `token` its Jupyter token."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, url: str, token: str) -> None:
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.url = url
        self.token = token
        self.proc: subprocess.Popen | None = None
        self._record: dict = {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self, timeout: float = 90.0, *, extension_started: bool = True) -> None:
        """Start it and wait until it answers (and, by default, until our extension's start hook has run)."""
        self.proc = proc = spawn(self.argv, self.env, self.log_path)
        self._record = record(proc.pid)

        def hook_ran() -> bool:
            return not extension_started or any(mark in self.log() for mark in STARTED_MARKS)

        try:
            wait_healthy(
                "Jupyter", self.url + "api/status", running=lambda: proc.poll() is None, log_path=self.log_path,
                timeout=timeout, headers={"Authorization": f"token {self.token}"}, ready=hook_ran,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def terminate(self) -> None:
        """Ask its process group (the server and its kernels) to stop; `stop()` then waits."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop its process group (TERM, then KILL after `timeout`) and reap it."""
        if self.proc is None:
            return
        stop_group(self._record, timeout=timeout)
        self.proc.wait()
