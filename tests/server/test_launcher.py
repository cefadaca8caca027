"""The prebuilt JupyterLab extension: installed with the package, a launcher card and menu entry open the UI."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_prebuilt_labextension_and_the_server_extension_are_enabled_on_install():
    labextensions = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                                   capture_output=True, text=True, timeout=300)  # fmt: skip
    server_extensions = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", "list"],
                                       capture_output=True, text=True, timeout=300)  # fmt: skip

    listed = labextensions.stdout + labextensions.stderr
    line = next(line for line in listed.splitlines() if "mlflow-oidc-jupyter" in line)
    assert "enabled" in line and "OK" in line
    assert "mlflow_oidc_jupyter.server" in server_extensions.stdout + server_extensions.stderr


@pytest.fixture(scope="module")
def lab(start_jupyter, chromium, stack):
    """JupyterLab signed in to MLflow as alice, open in Chromium."""
    server = start_jupyter(app="jupyterlab")
    server.sign_in(stack, "alice")
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}lab?token={server.token}")
    yield server, page
    context.close()


def test_launcher_card_opens_the_mlflow_ui_in_a_new_tab(lab, artifacts_dir):
    server, page = lab
    card = page.locator(".jp-LauncherCard", has_text="MLflow").first
    card.wait_for(timeout=60_000)
    page.screenshot(path=artifacts_dir / "jupyterlab-launcher.png")

    with page.context.expect_page() as opened:
        card.click()

    ui = opened.value
    ui.wait_for_load_state()
    assert ui.url == server.ui_url
    ui.get_by_text("Experiments").first.wait_for(timeout=30_000)
    ui.close()


def test_help_menu_opens_the_mlflow_ui_inside_jupyterlab(lab, artifacts_dir):
    server, page = lab

    page.get_by_role("menuitem", name="Help").click()
    page.get_by_text("MLflow (inside JupyterLab)").click()

    frame = page.frame_locator("iframe[src$='/mlflow/']")
    frame.get_by_text("Experiments").first.wait_for(timeout=30_000)
    page.screenshot(path=artifacts_dir / "jupyterlab-mlflow-tab.png")
