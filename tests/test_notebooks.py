"""The notebooks in notebooks/ run top to bottom in a real kernel (nbclient) against the local stack."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mlflow_oidc_jupyter.oidc import Session, TokenCache

from .support.idp_pages import approve_device
from .support.oidc_sessions import browser_sign_in, settings_for

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
DEVICE_HREF = re.compile(r'href="([^"]*user_code=[^"]*)"')

pytestmark = pytest.mark.slow


class DeviceApprover(threading.Thread):
    """Watches the widget state the kernel sends (as a frontend would) and approves the device code it shows."""

    def __init__(self, client: NotebookClient, stack, user: str | None) -> None:
        super().__init__(daemon=True)
        self.client, self.stack, self.user = client, stack, user
        self.prompts: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                values = [str(s.get("value", "")) for s in list(self.client.widget_state.values())]
            except RuntimeError:  # the kernel's messages changed the dict meanwhile
                continue
            for value in values:
                match = DEVICE_HREF.search(value)
                if match and match.group(1) not in self.prompts:
                    self.prompts.append(match.group(1))
                    if self.user:
                        approve_device(html.unescape(match.group(1)), self.user, self.stack.password(self.user))


def execute(name: str, stack, *, approve_as: str | None = None, timeout: int = 120) -> tuple[dict, list[str]]:
    """Run notebooks/<name>.ipynb; returns the executed notebook and the device prompts the widget showed."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": "."}})
    approver = DeviceApprover(client, stack, approve_as)
    approver.start()
    try:
        client.execute()
    finally:
        approver.stop.set()
    return nb, approver.prompts


def stdout(nb, index: int) -> str:
    return "".join(o.get("text", "") for o in nb.cells[index].outputs if o.output_type == "stream")


def tokens_of(cache_dir: Path, stack) -> list[str]:
    cache = TokenCache(cache_dir)
    tokens = cache.load(cache.current_key(stack.issuer, "jupyter"))
    return [t for t in (tokens.access_token, tokens.refresh_token, tokens.id_token) if t]


def test_quickstart_signs_in_by_device_flow_in_the_widget_and_logs_a_run(stack, kernel_env):
    nb, prompts = execute("01-quickstart", stack, approve_as="bob")

    assert len(prompts) == 1, "one device sign-in, shown in the widget"
    logged = stdout(nb, 5)
    assert re.search(r"by bob loss 0\.2", logged), logged
    run_id = re.search(r"run (\w+) by", logged).group(1)
    # Read back behind the proxy's back, as an admin would.
    run = stack.mlflow_behind_proxy("/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"loss": 0.2}
    assert "Signed in as bob" in stdout(nb, 7)
    saved = json.dumps(nb)
    assert "Signed in as bob" in saved  # the widget's last state, kept in the notebook
    for secret in tokens_of(kernel_env, stack):
        assert secret[:16] not in saved


def test_long_training_reuses_the_cached_session_and_logs_every_step(stack, kernel_env, monkeypatch):
    browser_sign_in(Session(settings_for(stack, kernel_env), background_refresh=False), stack, "bob")
    monkeypatch.setenv("TRAINING_STEPS", "20")
    monkeypatch.setenv("TRAINING_PAUSE", "0.1")

    started = time.monotonic()
    nb, prompts = execute("02-long-training", stack)

    assert prompts == [], "a cached valid session is reused without prompting"
    assert "logged 20 of 20 steps" in stdout(nb, 4)
    assert "Signed in as bob" in stdout(nb, 5)
    assert time.monotonic() - started < 60


def test_artifacts_and_registry_work_for_default_users_and_only_delete_is_refused(stack, kernel_env):
    browser_sign_in(Session(settings_for(stack, kernel_env), background_refresh=False), stack, "bob")

    nb, prompts = execute("03-artifacts-and-registry", stack)

    assert prompts == []
    assert "['model/config.json', 'model/weights.txt']\nweights would go here\n" in stdout(nb, 3)
    assert re.search(r"^registered demo-model-\w+ version 1$", stdout(nb, 4), re.M)
    refused = stdout(nb, 6)
    assert refused.startswith("refused:") and "bob" in refused, refused
