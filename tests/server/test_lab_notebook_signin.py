"""In JupyterLab + Chromium: a notebook's widget follows the server's sign-out and sign-in as they happen, and
%mlflow_logout says it ends this kernel's use only (MLflow then refuses here, the server stays signed in)."""

from __future__ import annotations

import pytest

from ..support.lab import open_notebook, run_cell
from .test_lab_browser import STATUS_ITEM, idp_login, palette

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CELLS = [
    "%load_ext mlflow_oidc_jupyter\n%mlflow_login",
    "%mlflow_logout",
    "import mlflow\ntry:\n    mlflow.search_experiments()\n    print('STILL WORKS')\n"
    "except Exception as exc:\n    print('REFUSED:', exc)",
]


def test_the_widget_follows_the_server_and_logout_in_a_notebook_ends_only_its_own_use(
    start_jupyter, chromium, stack, artifacts_dir
):
    server = start_jupyter(app="jupyterlab")
    server.sign_in(stack, "alice")
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        cells = open_notebook(server, page, "model.ipynb", CELLS)

        run_cell(page, cells.nth(0))
        widget = page.locator(".mlflow-oidc")
        widget.get_by_text("Signed in as alice").wait_for(timeout=60_000)
        assert "Reusing the Jupyter server's sign-in of alice" in cells.nth(0).inner_text()
        assert widget.get_by_role("button", name="Sign out (this kernel)").is_visible()

        # The server signs out from JupyterLab: the widget says so at once, no cell runs.
        palette(page, "Sign out of MLflow")
        page.locator(".jp-Dialog").get_by_role("button", name="Sign out").click()
        page.locator(".jp-Dialog", has_text="Signed out of MLflow").get_by_role("button", name="Close").click()
        widget.get_by_text("Sign-in required").wait_for(timeout=30_000)
        widget.screenshot(path=str(artifacts_dir / "kernel-widget-after-server-sign-out.png"))

        # ... and signs in again, as bob this time: the same widget follows.
        with page.context.expect_page() as opened:
            palette(page, "Sign in to MLflow")
        idp = opened.value
        idp_login(idp, stack, "bob")
        idp.get_by_text("Signed in to MLflow").wait_for(timeout=30_000)
        idp.close()
        widget.get_by_text("Signed in as bob").wait_for(timeout=30_000)
        widget.screenshot(path=str(artifacts_dir / "kernel-widget-after-server-sign-in.png"))

        run_cell(page, cells.nth(1))
        said = cells.nth(1).locator(".jp-OutputArea-output", has_text="no longer uses")
        said.wait_for(timeout=60_000)
        assert "stay signed in (as bob)" in said.inner_text()
        run_cell(page, cells.nth(2))
        refused = cells.nth(2).locator(".jp-OutputArea-output", has_text="REFUSED:")
        refused.wait_for(timeout=60_000)
        assert "%mlflow_logout" in refused.inner_text()
        page.locator(STATUS_ITEM, has_text="MLflow: bob").wait_for(timeout=30_000)  # the server is untouched
        assert server.status()["username"] == "bob"
        page.screenshot(path=str(artifacts_dir / "notebook-logout-this-kernel-only.png"))
    except Exception:
        page.screenshot(path=str(artifacts_dir / "notebook-signin-failure.png"))
        raise
    finally:
        context.close()
