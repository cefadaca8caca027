"""The MLflow UI in a real browser through the Jupyter server: sign-in at the IdP, pages, roles."""

from __future__ import annotations

import uuid

import pytest

from ..support.kernels import run_in_kernel
from .conftest import browser_sign_in

pytestmark = [pytest.mark.slow, pytest.mark.browser]

VIEWPORT = {"width": 1400, "height": 900}

#: What a notebook does on a signed-in server: ask the broker for the server session's token, log a run.
LOG_A_RUN = """
import os, requests, mlflow, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
answer = requests.get(os.environ["MLFLOW_OIDC_BROKER_URL"],
                      headers={"X-MLflow-OIDC-Broker": os.environ["MLFLOW_OIDC_BROKER_SECRET"]}, timeout=10)
os.environ["MLFLOW_TRACKING_TOKEN"] = answer.json()["access_token"]
mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
experiment = mlflow.set_experiment(NAME)
with mlflow.start_run(run_name="chart") as run:
    for step in range(20):
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3], [3, 1, 2])
    mlflow.log_figure(figure, "plot.png")
doomed = mlflow.create_experiment(NAME + "-doomed")
print(experiment.experiment_id, run.info.run_id, doomed)
"""


@pytest.fixture(scope="module")
def alice(start_jupyter, chromium, stack):
    """Alice's Jupyter server, signed in to MLflow from her browser through the IdP's login page."""
    server = start_jupyter()
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    browser_sign_in(page, server, stack, "alice")
    yield server, page
    context.close()


@pytest.fixture(scope="module")
def logged(alice):
    """An experiment with a run (metric, image) and an experiment to delete, both created by a kernel."""
    server, _page = alice
    name = f"kernel-{uuid.uuid4().hex[:8]}"
    out = run_in_kernel(server, f"NAME = {name!r}\n" + LOG_A_RUN)
    experiment_id, run_id, doomed_id = out.split()[-3:]
    return {"name": name, "experiment_id": experiment_id, "run_id": run_id, "doomed": name + "-doomed"}


def test_signed_in_browser_lists_experiments_a_kernel_created(alice, logged, artifacts_dir):
    server, page = alice

    page.goto(server.ui_url + "#/experiments")

    page.get_by_text(logged["name"], exact=True).wait_for(timeout=30_000)
    page.screenshot(path=artifacts_dir / "mlflow-ui-experiments.png")


def test_run_page_renders_its_metric_chart_and_image_artifact(alice, logged, artifacts_dir):
    server, page = alice
    run_url = f"{server.ui_url}#/experiments/{logged['experiment_id']}/runs/{logged['run_id']}"

    page.goto(run_url)
    page.get_by_text("chart", exact=True).first.wait_for(timeout=30_000)
    page.screenshot(path=artifacts_dir / "mlflow-ui-run.png")
    page.get_by_role("tab", name="Model metrics").click()
    page.locator("text=loss").first.wait_for(timeout=30_000)
    page.locator("canvas, svg.main-svg, .js-plotly-plot").first.wait_for(timeout=30_000)
    page.screenshot(path=artifacts_dir / "mlflow-ui-run-metrics.png")
    page.get_by_role("tab", name="Artifacts").click()
    with page.expect_response(lambda r: "get-artifact?path=plot.png" in r.url) as artifact:
        page.get_by_text("plot.png").click()
    assert artifact.value.status == 200
    image = page.locator("img[src^='blob:']").first  # the preview, drawn from the fetched bytes
    image.wait_for(timeout=30_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    page.screenshot(path=artifacts_dir / "mlflow-ui-run-artifact.png")


def delete_in_ui(page, server, experiment_name: str) -> None:
    page.goto(server.ui_url + "#/experiments")
    page.get_by_text(experiment_name, exact=True).wait_for(timeout=30_000)
    row = page.locator("tr, [role=row]").filter(has_text=experiment_name)
    row.locator("input[type=checkbox], [role=checkbox]").first.click()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()


def test_bob_deleting_an_experiment_sees_the_permission_error_alice_can(
    alice, logged, start_jupyter, chromium, stack, artifacts_dir
):
    bob_server = start_jupyter()
    context = chromium.new_context(viewport=VIEWPORT)
    bob_page = context.new_page()
    browser_sign_in(bob_page, bob_server, stack, "bob")

    delete_in_ui(bob_page, bob_server, logged["doomed"])

    bob_page.get_by_text("PERMISSION_DENIED").first.wait_for(timeout=30_000)
    assert "role Admin required" in bob_page.locator("body").inner_text()
    bob_page.screenshot(path=artifacts_dir / "mlflow-ui-bob-delete-denied.png")
    context.close()

    server, page = alice
    delete_in_ui(page, server, logged["doomed"])
    page.get_by_text(logged["doomed"], exact=True).wait_for(state="detached", timeout=30_000)
