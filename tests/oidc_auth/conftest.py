"""Fixtures: one mlflow-oidc-auth stack per test session (`stack/run up --server mlflow-oidc-auth`), and its users."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from stack.localstack import LocalStack

from ..conftest import Stack
from ..server.conftest import start_jupyter  # noqa: F401 (a fixture: Jupyter servers pointed at `on=` a stack)
from ..support.idp_pages import approve_device

CLI = str(Path(sys.executable).parent / "mlflow-oidc")


@pytest.fixture(scope="session")
def oidc_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local IdP and `mlflow server --app-name oidc-auth` (its own Python 3.12 venv) validating our tokens."""
    local = LocalStack(tmp_path_factory.mktemp("oidc-auth"), server="mlflow-oidc-auth", log=lambda _message: None)
    try:
        yield Stack(local, local.up(free_ports=True))
    finally:
        local.down()


class Terminal:
    """A user's shell pointed at the mlflow-oidc-auth server, with a token cache of its own."""

    def __init__(self, stack: Stack, home: Path) -> None:
        self.stack = stack
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_OIDC_", "MLFLOW_TRACKING_"))}
        self.env.update(
            HOME=str(home),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_CONFIG_HOME=str(home / ".config"),
            MLFLOW_OIDC_ISSUER=stack.issuer,
            MLFLOW_OIDC_CLIENT_ID="jupyter",
            MLFLOW_OIDC_AUDIENCE=stack.endpoints["audience"],
            MLFLOW_TRACKING_URI=stack.mlflow_url,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=120)

    def login(self, user: str) -> str:
        """`mlflow-oidc login` (device flow), approved on the IdP's pages as `user`; returns what it printed."""
        proc = subprocess.Popen([CLI, "login"], env=self.env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        shown = []
        for line in proc.stderr:
            shown.append(line)
            found = re.search(r"(http://\S+/device\S*)", line)
            if found:
                approve = (found.group(1), user, self.stack.password(user))
                threading.Thread(target=approve_device, args=approve, daemon=True).start()
                break
        shown.extend(proc.stderr)
        assert proc.wait(timeout=120) == 0, "".join(shown)
        return "".join(shown)

    def python(self, script: Path) -> subprocess.CompletedProcess:
        """`MLFLOW_TRACKING_AUTH=oidc python script.py`, nothing else configured in the script."""
        env = {**self.env, "MLFLOW_TRACKING_AUTH": "oidc"}
        return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A REST call to mlflow-oidc-auth with this terminal's token (`mlflow-oidc token`), as curl would do it."""
        token = self.cli("token").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.stack.mlflow_url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def terminal(oidc_auth: Stack, tmp_path: Path) -> Terminal:
    home = tmp_path / "home"
    home.mkdir()
    return Terminal(oidc_auth, home)


@pytest.fixture
def make_terminal(oidc_auth: Stack, tmp_path: Path):
    """Several users' terminals in one test, each with its own home."""

    def make(name: str) -> Terminal:
        home = tmp_path / name
        home.mkdir()
        return Terminal(oidc_auth, home)

    return make
