"""End to end in real JupyterLab and headless Chromium: %mlflow_login, sign in as bob, the next cell logs a metric."""

from __future__ import annotations

import re

import pytest
from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from .server.conftest import start_jupyter  # noqa: F401 - the server tests' Jupyter fixture
from .server.kernels import run_in_kernel

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def run_cell(page, cell) -> None:
    """Click into the cell and press Shift+Enter until its prompt shows it ran or runs (JupyterLab may still load)."""
    for _ in range(5):
        cell.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        try:
            cell.locator(".jp-InputPrompt").filter(has_text=re.compile(r"\[[*0-9]+\]")).wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError("the cell never started")


@pytest.fixture(scope="module")
def lab(start_jupyter):  # noqa: F811
    """JupyterLab with the server extension, signed out of MLflow; its kernels get the broker's address."""
    return start_jupyter(app="jupyterlab")


def test_sign_in_from_the_widget_then_the_next_cell_logs_a_metric(lab, chromium, stack, artifacts_dir):
    server = lab
    notebook = new_notebook(
        cells=[
            new_code_cell("%load_ext mlflow_oidc_jupyter\n%mlflow_login"),
            new_code_cell(
                "import mlflow\n"
                "mlflow.set_experiment('jupyterlab-e2e')\n"
                "with mlflow.start_run() as run:\n"
                "    mlflow.log_metric('accuracy', 0.93)\n"
                "print('RUN', run.info.run_id)"
            ),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    put = server.http().put(server.url + "api/contents/e2e.ipynb",
                            json={"type": "notebook", "content": notebook}, timeout=30)  # fmt: skip
    put.raise_for_status()
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{server.url}lab/tree/e2e.ipynb?token={server.token}")
        cells = page.locator(".jp-Notebook .jp-Cell")
        cells.nth(1).wait_for(timeout=60_000)
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)

        run_cell(page, cells.nth(0))
        sign_in = page.locator(".mlflow-oidc a", has_text="Sign in")
        sign_in.wait_for(timeout=60_000)
        assert sign_in.get_attribute("target") == "_blank"
        with page.expect_popup() as popup_info:
            sign_in.click()
        idp = popup_info.value
        idp.fill("#username", "bob")
        idp.fill("#password", stack.password("bob"))
        idp.click("button[type=submit]")

        widget = page.locator(".mlflow-oidc")
        widget.get_by_text("Signed in as bob").wait_for(timeout=30_000)
        assert page.locator(".mlflow-oidc a", has_text="Open MLflow UI").get_attribute("href") == "/mlflow/"
        assert "Default" in widget.inner_text()
        widget.screenshot(path=str(artifacts_dir / "kernel-widget-signed-in.png"))

        run_cell(page, cells.nth(1))
        output = cells.nth(1).locator(".jp-OutputArea-output", has_text="RUN ")
        output.wait_for(timeout=60_000)
        run_id = re.search(r"RUN (\w+)", output.inner_text()).group(1)
    except Exception:
        page.screenshot(path=str(artifacts_dir / "kernel-jupyterlab-failure.png"))
        raise
    finally:
        context.close()

    run = stack.mlflow_behind_proxy("/api/2.0/mlflow/runs/get", run_id=run_id)["run"]
    assert {m["key"]: m["value"] for m in run["data"]["metrics"]} == {"accuracy": 0.93}
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.user"] == "bob"


def test_a_new_kernel_of_the_signed_in_server_needs_no_second_sign_in(lab, stack):
    lab.sign_in(stack, "bob")  # already signed in by the test above when run together; harmless again

    out = run_in_kernel(
        lab,
        """
ip = get_ipython()
ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
ip.run_line_magic("mlflow_login", "--text")
import mlflow, os
mlflow.set_experiment("second-kernel")
with mlflow.start_run() as run:
    mlflow.log_metric("x", 1.0)
print("AUTH", os.environ["MLFLOW_TRACKING_AUTH"], "TOKEN" in os.environ.get("MLFLOW_TRACKING_TOKEN", ""))
print("USER", mlflow.get_run(run.info.run_id).data.tags["mlflow.user"])
""",
    )

    assert "To sign in" not in out, out
    assert "Signed in as bob" in out and "auto-refresh" in out.lower()
    assert "AUTH oidc False" in out
    assert "USER bob" in out
