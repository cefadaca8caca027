"""Links to runs open in Jupyter's /mlflow/ UI: MLflow's printed "View run" lines and the widget's "Open this run"."""

from __future__ import annotations

import re

import pytest

from ..support.kernels import run_in_kernel
from ..support.lab import open_notebook, run_cell

pytestmark = pytest.mark.slow

LOG_A_RUN = """
ip = get_ipython()
ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
ip.run_line_magic("mlflow_login", "--text")
import mlflow
mlflow.set_experiment("links")
with mlflow.start_run(run_name="linked") as run:
    mlflow.log_metric("x", 1.0)
print("IDS", run.info.experiment_id, run.info.run_id)
"""


def test_mlflows_view_run_lines_point_at_the_jupyter_ui_not_the_tracking_server(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")

    out = run_in_kernel(server, LOG_A_RUN)

    experiment_id, run_id = re.search(r"IDS (\S+) (\S+)", out).groups()
    assert f"View run linked at: {server.ui_url}#/experiments/{experiment_id}/runs/{run_id}" in out
    assert f"View experiment at: {server.ui_url}#/experiments/{experiment_id}" in out
    assert not [line for line in out.splitlines() if "View" in line and stack.mlflow_url in line]
    assert f"MLflow UI:               {server.ui_url}" in out  # text output names the UI with its origin too


@pytest.mark.browser
def test_in_jupyterlab_the_printed_link_and_the_widgets_open_this_run_show_the_run(
    start_jupyter, chromium, stack, artifacts_dir
):
    server = start_jupyter(app="jupyterlab", base_url="/lab-base/")
    server.sign_in(stack, "alice")
    sources = [
        "%load_ext mlflow_oidc_jupyter\n%mlflow_login",
        "import mlflow\nmlflow.set_experiment('links-lab')\n"
        "with mlflow.start_run(run_name='clicked') as run:\n    mlflow.log_metric('x', 1.0)",
    ]
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        cells = open_notebook(server, page, "links.ipynb", sources)
        run_cell(page, cells.nth(0))
        widget = page.locator(".mlflow-oidc")
        widget.get_by_text("Signed in as alice").wait_for(timeout=60_000)
        run_cell(page, cells.nth(1))
        printed = cells.nth(1).locator("a", has_text="/lab-base/mlflow/#/experiments/")
        printed.first.wait_for(timeout=60_000)
        assert "View run clicked at: http://127.0.0.1" in cells.nth(1).inner_text()

        with page.expect_popup() as opened:
            printed.first.click()
        ui = opened.value
        ui.get_by_text("clicked").first.wait_for(timeout=60_000)
        assert "/lab-base/mlflow/#/experiments/" in ui.url
        ui.screenshot(path=artifacts_dir / "run-link-from-notebook.png")
        ui.close()

        open_run = widget.locator("a", has_text="Open this run")
        open_run.wait_for(timeout=30_000)  # the widget's ticker shows the run without another call
        assert open_run.get_attribute("href").startswith("/lab-base/mlflow/#/experiments/")
        widget.screenshot(path=str(artifacts_dir / "kernel-widget-open-this-run.png"))
        with page.expect_popup() as opened:
            open_run.click()
        run_page = opened.value
        run_page.get_by_text("clicked").first.wait_for(timeout=60_000)
        run_page.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=30_000)
        run_page.close()
    except Exception:
        page.screenshot(path=str(artifacts_dir / "run-links-failure.png"))
        raise
    finally:
        context.close()
