"""Under JupyterHub's `base_url=/user/alice/` and a public hostname, the UI, sign-in and broker all work."""

from __future__ import annotations

import json

import pytest

from ..conftest import launch_chromium
from ..support.kernels import run_in_kernel
from .conftest import browser_sign_in
from .test_broker import ASK_BROKER

pytestmark = [pytest.mark.slow, pytest.mark.browser]

#: A name that is not localhost: MLflow's own Host/Origin checks would refuse a forwarded browser Host or Origin.
PUBLIC_HOST = "jupyter.test"


@pytest.fixture(scope="module")
def hub_server(start_jupyter):
    return start_jupyter(base_url="/user/alice/", args=("--ServerApp.allow_remote_access=True",))


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = launch_chromium(playwright, f"--host-resolver-rules=MAP {PUBLIC_HOST} 127.0.0.1")
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def signed_in(hub_server, browser, stack):
    """The hub server after alice signed in from her browser (IdP login page) at /user/alice/mlflow/."""
    page = browser.new_page()
    browser_sign_in(page, hub_server, stack, "alice")
    yield page
    page.close()


def test_sign_in_and_ui_under_a_base_url(hub_server, signed_in, artifacts_dir):
    page = signed_in

    assert page.url == hub_server.origin + "/user/alice/mlflow/"
    page.get_by_text("Default", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=artifacts_dir / "mlflow-ui-base-url.png")


def test_ui_writes_from_a_public_hostname_reach_mlflow(hub_server, signed_in, browser):
    public_ui = hub_server.ui_url.replace("127.0.0.1", PUBLIC_HOST)
    page = browser.new_page()
    page.goto(f"{public_ui}?token={hub_server.token}#/experiments")

    page.get_by_test_id("create-experiment-button").click()
    dialog = page.get_by_role("dialog")
    dialog.locator("#experimentName").fill("made-on-a-public-host")
    with page.expect_response(lambda r: r.url.endswith("/experiments/create")) as created:
        dialog.get_by_role("button", name="Create").click()

    assert created.value.status == 200, created.value.text()
    found = hub_server.http().get(hub_server.ui_url + "ajax-api/2.0/mlflow/experiments/get-by-name",
                                  params={"experiment_name": "made-on-a-public-host"}, timeout=10)  # fmt: skip
    assert found.status_code == 200
    page.close()


def test_kernels_reach_the_broker_under_the_base_url(hub_server, signed_in):
    out = run_in_kernel(hub_server, ASK_BROKER + "print(json.dumps([os.environ['MLFLOW_OIDC_BROKER_URL'], ask()[0]]))")

    url, status = json.loads(out)
    assert url == hub_server.origin + "/user/alice/mlflow/oauth/broker"
    assert status == 200
