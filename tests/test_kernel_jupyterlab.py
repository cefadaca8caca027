"""End to end in real JupyterLab and headless Chromium: %mlflow_login, sign in as bob, the next cell logs a metric."""

from __future__ import annotations

import re

import pytest

from .server.conftest import start_jupyter  # noqa: F401 - the server tests' Jupyter fixture
from .support.kernels import run_in_kernel
from .support.lab import open_notebook, run_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(start_jupyter):  # noqa: F811
    """JupyterLab with the server extension, signed out of MLflow; its kernels get the broker's address."""
    return start_jupyter(app="jupyterlab")


def test_sign_in_from_the_widget_then_the_next_cell_logs_a_metric(lab, chromium, stack, artifacts_dir):
    server = lab
    sources = [
        "%load_ext mlflow_oidc_jupyter\n%mlflow_login",
        "import mlflow\n"
        "mlflow.set_experiment('jupyterlab-e2e')\n"
        "with mlflow.start_run() as run:\n"
        "    mlflow.log_metric('accuracy', 0.93)\n"
        "print('RUN', run.info.run_id)",
    ]
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        cells = open_notebook(server, page, "e2e.ipynb", sources)

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
