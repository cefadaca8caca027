"""`%mlflow_login`, `%mlflow_logout`, `%mlflow_whoami` in a real IPython shell against the local stack."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time

import mlflow
import pytest
import requests
from IPython.core.error import UsageError
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_oidc_jupyter.errors import LoginRequired
from mlflow_oidc_jupyter.oidc import Session, TokenCache
from mlflow_oidc_jupyter.oidc.default import peek_default_session

from .support.idp_pages import approve_device, authorize
from .support.oidc_sessions import device_sign_in, settings_for
from .support.shells import extension_shell

DEVICE_LINK = re.compile(r"open (http://\S+/device\S*)")
BROWSER_LINK = re.compile(r"open (http://\S+/auth\?\S+)")


class Terminal:
    """sys.stdout as the user reads it; approves a sign-in prompt it sees, as `user`, like a person would."""

    def __init__(self, stack, user: str = "bob") -> None:
        self.stack, self.user = stack, user
        self.text = ""
        self.approvals: list[threading.Thread] = []

    def write(self, data: str) -> int:
        self.text += data
        device, browser = DEVICE_LINK.search(data), BROWSER_LINK.search(data)
        if device:
            self._approve(approve_device, device.group(1))
        elif browser:
            self._approve(lambda url, *a: requests.get(authorize(url, *a), timeout=10), browser.group(1))
        return len(data)

    def _approve(self, how, url: str) -> None:
        thread = threading.Thread(target=how, args=(url, self.user, self.stack.password(self.user)), daemon=True)
        thread.start()
        self.approvals.append(thread)

    def flush(self) -> None:
        pass

    def run(self, shell, magic: str, line: str = ""):
        """Run a line magic with this terminal as stdout (pytest swaps sys.stdout per test phase)."""
        with contextlib.redirect_stdout(self):
            return shell.run_line_magic(magic, line)


@pytest.fixture
def shell(kernel_env, monkeypatch, stack):
    """A real IPython shell with the extension loaded; stdout is a terminal that approves prompts as bob."""
    with extension_shell(Terminal(stack)) as ip:
        yield ip


def test_bare_login_with_env_settings_makes_plain_mlflow_calls_authenticated(shell, stack):
    shell.terminal.run(shell, "mlflow_login", "")

    assert "Signed in as bob" in shell.terminal.text
    assert "oidc" == os.environ["MLFLOW_TRACKING_AUTH"]
    mlflow.set_experiment("kernel-magics")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.25)
    logged = MlflowClient().get_run(run.info.run_id)
    assert logged.data.metrics == {"loss": 0.25}
    assert logged.data.tags["mlflow.user"] == "bob"


def test_browser_flow_signs_in_through_a_loopback_redirect(shell):
    shell.terminal.run(shell, "mlflow_login", "--flow browser --text")

    assert "Signed in as bob" in shell.terminal.text
    assert peek_default_session().identity.username == "bob"


def test_a_cached_valid_session_is_reused_without_prompting(shell, stack, kernel_env):
    # As if `mlflow-oidc login` ran in a terminal before: the same issuer, client and cache.
    earlier = Session(settings_for(stack, kernel_env), background_refresh=False)
    device_sign_in(earlier, stack, "alice")

    started = time.monotonic()
    shell.terminal.run(shell, "mlflow_login", "")

    assert time.monotonic() - started < 5
    assert "open http" not in shell.terminal.text, "no sign-in prompt"
    assert shell.terminal.approvals == []
    assert "Signed in as alice" in shell.terminal.text
    assert "Default" in [e.name for e in MlflowClient().search_experiments()]  # answered through proxy + gate


def test_whoami_shows_user_roles_and_expiries_never_a_token(shell, kernel_env):
    shell.terminal.run(shell, "mlflow_login", "")
    shell.terminal.text = ""

    shell.terminal.run(shell, "mlflow_whoami", "")

    text = shell.terminal.text
    assert "Signed in as bob" in text
    assert re.search(r"Roles:\s+Default", text)
    assert re.search(r"Access token expires in:\s+\d+ (min|s)", text)
    assert "Session expires in:" in text
    tokens = TokenCache(kernel_env)
    stored = tokens.load(tokens.current_key(peek_default_session().settings.issuer, "jupyter"))
    for secret in (stored.access_token, stored.refresh_token, stored.id_token):
        assert secret[:20] not in text


def test_logout_forgets_the_session_and_mlflow_calls_ask_to_sign_in(shell, kernel_env):
    shell.terminal.run(shell, "mlflow_login", "")
    tokens = TokenCache(kernel_env)
    id_token = tokens.load(tokens.current_key(peek_default_session().settings.issuer, "jupyter")).id_token

    shell.terminal.run(shell, "mlflow_logout", "")

    # It says whom the sign-out affects: here everyone sharing the token cache.
    assert "Signed out of MLflow (as bob)" in shell.terminal.text
    assert "every program sharing the token cache" in shell.terminal.text
    # The provider's sign-out link names the client, never the ID token (the output is saved in the notebook).
    assert "/session/end?client_id=jupyter" in shell.terminal.text
    assert id_token and id_token[:20] not in shell.terminal.text and "id_token_hint" not in shell.terminal.text
    # MLflow wraps what the auth provider raises in an MlflowException; the sign-in hint survives.
    with pytest.raises((LoginRequired, MlflowException), match="You are not signed in.*mlflow_login"):
        MlflowClient().search_experiments()


def test_unload_stops_every_background_thread_and_restores_the_auth_setting(shell):
    shell.terminal.run(shell, "mlflow_login", "")
    assert any(t.name == "oidc-session-refresher" for t in threading.enumerate())

    shell.run_line_magic("unload_ext", "mlflow_oidc_jupyter")

    ours = [t.name for t in threading.enumerate() if t.name.startswith(("oidc-", "mlflow-oidc-")) and t.is_alive()]
    assert ours == []
    assert "MLFLOW_TRACKING_AUTH" not in os.environ
    shell.run_line_magic("load_ext", "mlflow_oidc_jupyter")  # for the fixture's unload


def test_missing_settings_are_a_usage_error_that_says_what_to_set(shell, monkeypatch):
    monkeypatch.delenv("MLFLOW_OIDC_ISSUER")

    with pytest.raises(UsageError, match="MLFLOW_OIDC_ISSUER"):
        shell.terminal.run(shell, "mlflow_login", "")
