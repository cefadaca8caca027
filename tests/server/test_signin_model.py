"""One sign-in model (docs/sign-in.md): what %mlflow_login and %mlflow_logout affect, said in their output.

The kernel here is an in-process IPython shell given a real Jupyter server's broker address and secret (read from a
kernel that server started), so it uses that server's session exactly as a notebook of that server does.
"""

from __future__ import annotations

import hashlib
import json

import mlflow
import pytest
import requests
from IPython.core.interactiveshell import InteractiveShell
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_oidc_jupyter.errors import LoginRequired

from ..support.kernels import run_in_kernel
from ..support.shells import extension_shell
from ..support.waiting import wait_until
from ..test_kernel_magics import Terminal

pytestmark = pytest.mark.slow

BROKER_ENV = ("MLFLOW_OIDC_BROKER_URL", "MLFLOW_OIDC_BROKER_SECRET", "MLFLOW_OIDC_UI_URL", "MLFLOW_OIDC_ISSUER",
              "MLFLOW_OIDC_CLIENT_ID", "MLFLOW_TRACKING_URI")  # fmt: skip


@pytest.fixture(scope="module")
def alice_server(start_jupyter, stack):
    """A Jupyter server signed in as alice, and the environment its kernels get."""
    server = start_jupyter()
    server.sign_in(stack, "alice")
    env = json.loads(run_in_kernel(server, ENV_OF_A_KERNEL))
    return server, env


@pytest.fixture
def shell(alice_server, stack, isolated_home, monkeypatch):
    """An IPython shell as a kernel of alice's server; its terminal approves device prompts as bob."""
    _server, env = alice_server
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_OIDC_AUDIENCE", stack.endpoints["audience"])
    with extension_shell(Terminal(stack, user="bob")) as ip:
        yield ip


ASK_BROKER_STATUS = """
import os, requests
headers = {"X-MLflow-OIDC-Broker": os.environ["MLFLOW_OIDC_BROKER_SECRET"]}
print(requests.get(os.environ["MLFLOW_OIDC_BROKER_URL"], headers=headers, timeout=30).status_code)
"""
ENV_OF_A_KERNEL = f"import os, json; print(json.dumps({{k: os.environ[k] for k in {BROKER_ENV}}}))"


def server_refreshes(server, env) -> int:
    """Make the server refresh its session now (as after a 401); the HTTP status of the broker's answer."""
    headers = {"X-MLflow-OIDC-Broker": env["MLFLOW_OIDC_BROKER_SECRET"]}
    token = requests.get(env["MLFLOW_OIDC_BROKER_URL"], headers=headers, timeout=30).json()["access_token"]
    rejected = hashlib.sha256(token.encode()).hexdigest()
    return requests.get(env["MLFLOW_OIDC_BROKER_URL"], params={"rejected": rejected}, headers=headers,
                        timeout=30).status_code  # fmt: skip


def test_login_says_it_reuses_the_servers_sign_in_and_whom_that_serves(shell):
    shell.terminal.run(shell, "mlflow_login", "--text")

    text = shell.terminal.text
    assert "Reusing the Jupyter server's sign-in of alice" in text
    assert "shared with the MLflow UI and every notebook" in text
    assert "open http" not in text  # no prompt


def test_logout_of_a_kernel_on_the_servers_sign_in_stops_mlflow_here_and_leaves_the_server_signed_in(
    shell, alice_server
):
    server, _env = alice_server
    shell.terminal.run(shell, "mlflow_login", "--text")

    shell.terminal.run(shell, "mlflow_logout", "")

    text = shell.terminal.text
    assert "This kernel no longer uses the Jupyter server's MLflow sign-in (as alice)" in text
    assert "stay signed in (as alice)" in text and "%mlflow_logout --server" in text
    # Never silently still working: MLflow calls here fail, whoami agrees, the server is untouched.
    with pytest.raises((LoginRequired, MlflowException), match="signed out of MLflow with %mlflow_logout"):
        MlflowClient().search_experiments()
    shell.terminal.text = ""
    shell.terminal.run(shell, "mlflow_whoami", "")
    assert "Not signed in" in shell.terminal.text
    assert "The Jupyter server is signed in as alice" in shell.terminal.text
    assert server.status()["username"] == "alice"
    shell.terminal.run(shell, "mlflow_login", "--text")  # and back, without a prompt
    assert MlflowClient().search_experiments() is not None


def test_new_signs_this_kernel_in_as_another_user_and_its_logout_leaves_the_server_working(shell, alice_server, stack):
    server, env = alice_server

    shell.terminal.run(shell, "mlflow_login", "--new --text")

    text = shell.terminal.text
    assert "open http" in text and "Signed in as bob" in text  # a prompt of its own, even though alice is there
    assert "this kernel only" in text
    mlflow.set_experiment("sign-in-model")
    with mlflow.start_run() as run:
        mlflow.log_metric("x", 1.0)
    assert MlflowClient().get_run(run.info.run_id).data.tags["mlflow.user"] == "bob"
    assert server.status()["username"] == "alice"

    shell.terminal.text = ""
    shell.terminal.run(shell, "mlflow_logout", "")

    text = shell.terminal.text
    assert "Signed out of MLflow in this kernel only (as bob): its refresh token is revoked" in text
    assert "The Jupyter server, the MLflow UI and other notebooks keep their sign-in" in text
    assert server.status()["username"] == "alice"
    assert server_refreshes(server, env) == 200  # the server's refresh token still works


def test_new_as_the_same_user_as_the_server_never_revokes_on_logout(shell, alice_server):
    server, env = alice_server
    shell.terminal.user = "alice"
    shell.terminal.run(shell, "mlflow_login", "--new --text")
    assert "Signed in as alice" in shell.terminal.text

    shell.terminal.run(shell, "mlflow_logout", "")

    assert "its tokens are forgotten (not revoked" in shell.terminal.text
    with pytest.raises((LoginRequired, MlflowException)):
        MlflowClient().search_experiments()
    assert server_refreshes(server, env) == 200


def test_logout_server_signs_out_the_ui_and_every_kernel_and_says_so(start_jupyter, stack, shell_factory):
    server = start_jupyter()
    server.sign_in(stack, "alice")
    ip, _login = shell_factory(server)
    ip.terminal.run(ip, "mlflow_login", "--text")

    ip.terminal.run(ip, "mlflow_logout", "--server")

    text = ip.terminal.text
    assert "Signed the Jupyter server out of MLflow (as alice)" in text
    assert "every notebook using its sign-in, this one included" in text
    assert server.status()["signed_in"] is False
    other_kernel = run_in_kernel(server, ASK_BROKER_STATUS)
    assert other_kernel.strip().endswith("401")


def test_a_kernel_follows_the_server_signing_out_and_in_without_any_mlflow_call(start_jupyter, stack, shell_factory):
    server = start_jupyter()
    server.sign_in(stack, "alice")
    ip, login = shell_factory(server)
    ip.terminal.run(ip, "mlflow_login", "--text")
    assert login.session.signed_in

    server.http().post(server.ui_url + "oauth/logout", headers={"Accept": "application/json"}, timeout=30)
    wait_until(lambda: not login.session.signed_in, 30)
    ip.terminal.text = ""
    ip.terminal.run(ip, "mlflow_whoami", "")
    assert "Sign-in required" in ip.terminal.text or "Not signed in" in ip.terminal.text

    server.sign_in(stack, "bob")
    wait_until(lambda: login.session.signed_in and login.session.identity.username == "bob", 30)
    ip.terminal.text = ""
    ip.terminal.run(ip, "mlflow_whoami", "")
    assert "Signed in as bob" in ip.terminal.text
    assert "no limit announced" not in ip.terminal.text  # the provider announces the refresh token's idle limit


@pytest.fixture
def shell_factory(stack, isolated_home, monkeypatch):
    """Make an IPython shell as a kernel of a given server; returns (shell, its KernelLogin)."""
    shells = []

    def make(server):
        env = json.loads(run_in_kernel(server, ENV_OF_A_KERNEL))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("MLFLOW_OIDC_AUDIENCE", stack.endpoints["audience"])
        ip = InteractiveShell.instance()
        ip.terminal = Terminal(stack)
        ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
        shells.append(ip)
        import mlflow_oidc_jupyter.kernel as kernel

        return ip, kernel._login

    try:
        yield make
    finally:
        for ip in shells:
            ip.run_line_magic("unload_ext", "mlflow_oidc_jupyter")
        mlflow.set_tracking_uri(None)
