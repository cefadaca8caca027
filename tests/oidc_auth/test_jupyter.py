"""Jupyter against mlflow-oidc-auth: the magics in a kernel, and the /mlflow/ UI with its added menu and admin UI."""

from __future__ import annotations

import uuid

import pytest

from ..support.kernels import run_in_kernel
from .conftest import sign_in

pytestmark = [pytest.mark.slow, pytest.mark.browser]

VIEWPORT = {"width": 1400, "height": 900}

LOG_A_RUN = """
ip = get_ipython()
ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
ip.run_line_magic("mlflow_login", "--text")
ip.run_line_magic("mlflow_whoami", "")
import mlflow
experiment = mlflow.set_experiment(NAME)
with mlflow.start_run(run_name="from-the-kernel") as run:
    mlflow.log_metric("accuracy", 0.93)
    mlflow.log_text("kernel notes", "notes.txt")
print("RUN", experiment.experiment_id, run.info.run_id, mlflow.get_run(run.info.run_id).data.tags["mlflow.user"])
"""


@pytest.fixture(scope="module")
def alice_lab(start_jupyter, oidc_auth):
    """A Jupyter server whose /mlflow/ is mlflow-oidc-auth, signed in as alice through the IdP's login page."""
    server = start_jupyter(on=oidc_auth)
    sign_in(server, oidc_auth, "alice")
    return server


@pytest.fixture(scope="module")
def kernel_run(alice_lab) -> dict:
    """What a notebook of alice's server logged with the magics: %mlflow_login, then plain MLflow calls."""
    name = f"lab-{uuid.uuid4().hex[:8]}"
    out = run_in_kernel(alice_lab, f"NAME = {name!r}\n" + LOG_A_RUN)
    experiment_id, run_id, user = out.split("RUN ", 1)[1].split()
    return {"name": name, "experiment_id": experiment_id, "run_id": run_id, "user": user, "out": out}


def test_the_magics_sign_a_kernel_in_and_runs_carry_the_user_the_server_saw(alice_lab, kernel_run, oidc_auth):
    assert "Signed in as alice" in kernel_run["out"] and "To sign in" not in kernel_run["out"]
    assert kernel_run["user"] == "alice"
    # mlflow-oidc-auth made the caller it authenticated from the bearer token the experiment's manager.
    users = alice_lab.http().get(
        alice_lab.ui_url + f"api/2.0/mlflow/permissions/experiments/{kernel_run['experiment_id']}/users", timeout=30
    )
    assert users.status_code == 200, users.text
    assert ("alice", "MANAGE") in {(u["name"], u["permission"]) for u in users.json()}


def test_the_ui_shows_the_added_menu_and_its_admin_ui_under_mlflow(
    alice_lab, kernel_run, chromium, oidc_auth, artifacts_dir
):
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{alice_lab.ui_url}?token={alice_lab.token}#/experiments")
        page.get_by_text(kernel_run["name"], exact=True).wait_for(timeout=60_000)
        menu = page.locator("[data-mlflow-oidc-injected] a")
        # Its menu asks the server who we are: the provider's display name of the signed-in user.
        menu.filter(has_text=oidc_auth.display_name("alice")).wait_for(timeout=30_000)
        page.screenshot(path=artifacts_dir / f"oidc-auth-{oidc_auth.provider}-ui-menu.png")
        permissions = menu.filter(has_text="Permissions")
        assert permissions.get_attribute("href") == alice_lab.base_url + "mlflow/oidc/ui/user"

        permissions.click()

        page.get_by_text("You have administrator privileges").wait_for(timeout=60_000)
        assert page.url.startswith(alice_lab.ui_url + "oidc/ui/")
        page.locator(f'a[href="{alice_lab.base_url}mlflow/oidc/ui/user/experiments"]').click()
        page.get_by_text(kernel_run["name"]).first.wait_for(timeout=30_000)
        page.screenshot(path=artifacts_dir / f"oidc-auth-{oidc_auth.provider}-admin-ui.png")
    finally:
        context.close()
