"""JupyterLab and the MLflow UI in Chromium: launcher card, status bar, palette commands, identity chip, banners."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]

STATUS_ITEM = ".jp-mlflow-oidc-status"


def idp_login(page, stack, username: str) -> None:
    """On the provider's login page: fill in and submit."""
    page.fill("#username", username)
    page.fill("#password", stack.password(username))
    page.click("button[type=submit]")


def palette(page, label: str) -> None:
    """Run a command from JupyterLab's command palette by its label."""
    page.keyboard.press("Control+Shift+C")
    search = page.locator(".lm-CommandPalette-input")
    search.wait_for(timeout=30_000)
    search.fill(label)
    page.locator(".lm-CommandPalette-item", has_text=label).first.click()


@pytest.fixture(scope="module")
def lab(start_jupyter, chromium):
    """JupyterLab, signed out of MLflow, open in Chromium."""
    server = start_jupyter(app="jupyterlab")
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}lab?token={server.token}")
    page.locator(".jp-LauncherCard", has_text="MLflow").first.wait_for(timeout=90_000)
    yield server, page
    context.close()


def test_signed_out_the_launcher_card_goes_straight_to_the_provider_then_to_the_ui(lab, stack, artifacts_dir):
    server, page = lab
    item = page.locator(STATUS_ITEM)
    item.get_by_text("MLflow: signed out").wait_for(timeout=30_000)
    page.locator(".jp-LauncherCard", has_text="MLflow").first.screenshot(path=artifacts_dir / "lab-launcher-card.png")

    with page.context.expect_page() as opened:
        page.locator(".jp-LauncherCard", has_text="MLflow").first.click()
    ui = opened.value
    documents: list[str] = []
    ui.on("request", lambda r: documents.append(r.url) if r.resource_type == "document" else None)
    ui.locator("#username").wait_for(timeout=30_000)

    # No page of ours between the click and the provider: only our sign-in redirect.
    assert urlsplit(ui.url).netloc == urlsplit(stack.issuer).netloc
    assert not any(u.startswith(server.origin) and "/oauth/login" not in u for u in documents), documents
    idp_login(ui, stack, "alice")
    ui.wait_for_url(server.ui_url, timeout=30_000)
    ui.get_by_text("Experiments").first.wait_for(timeout=60_000)
    ui.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=30_000)
    ui.screenshot(path=artifacts_dir / "mlflow-ui-identity-chip.png")
    # The status bar learns it from the server, without a reload of JupyterLab.
    item.get_by_text("MLflow: alice").wait_for(timeout=30_000)
    item.screenshot(path=artifacts_dir / "lab-status-bar-signed-in.png")
    ui.close()


def test_the_status_command_shows_user_roles_and_expiries(lab, stack, artifacts_dir):
    server, page = lab
    if not server.status()["signed_in"]:
        server.sign_in(stack, "alice")
    page.locator(STATUS_ITEM, has_text="alice").wait_for(timeout=30_000)

    palette(page, "MLflow sign-in status")

    dialog = page.locator(".jp-Dialog")
    dialog.get_by_text("Access token expires in").wait_for(timeout=30_000)
    text = dialog.inner_text()
    assert "alice" in text and "Admin" in text and "Session expires in" in text
    assert "every notebook" in text
    dialog.screenshot(path=artifacts_dir / "lab-status-dialog.png")
    dialog.get_by_role("button", name="Close").click()


def test_sign_out_from_the_palette_ends_the_session_and_the_open_ui_shows_a_way_back(lab, stack, artifacts_dir):
    server, page = lab
    if not server.status()["signed_in"]:
        server.sign_in(stack, "alice")
    ui = page.context.new_page()
    ui.goto(server.ui_url + "#/experiments")
    ui.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=60_000)

    palette(page, "Sign out of MLflow")
    confirm = page.locator(".jp-Dialog")
    confirm.get_by_text("every notebook").wait_for(timeout=30_000)
    confirm.screenshot(path=artifacts_dir / "lab-sign-out-confirm.png")
    confirm.get_by_role("button", name="Sign out").click()
    page.locator(".jp-Dialog", has_text="Signed out of MLflow").get_by_role("button", name="Close").click()

    assert server.status()["signed_in"] is False
    page.locator(STATUS_ITEM, has_text="signed out").wait_for(timeout=30_000)
    banner = ui.locator("#mlflow-oidc-banner")
    banner.get_by_text("Your MLflow sign-in has ended").wait_for(timeout=30_000)  # pushed to the open UI
    ui.screenshot(path=artifacts_dir / "mlflow-ui-session-ended-banner.png")

    ui.click("#mlflow-oidc-banner-sign-in")
    if ui.locator("#username").is_visible():  # the provider may still remember alice
        idp_login(ui, stack, "alice")
    ui.wait_for_url(f"{server.ui_url}#/experiments", timeout=60_000)  # back on the page it left
    ui.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=30_000)
    assert server.status()["signed_in"] is True
    ui.close()


def open_and_load(ui, url: str, data: str) -> None:
    """Open `url` in the UI and wait until the page's `data` request was answered 200 (its code ran)."""
    with ui.expect_response(lambda r: data in r.url and r.status == 200, timeout=60_000):
        ui.goto(url)


# The models page's code is loaded when that page is first opened. With it loaded, the 401 after sign-out is the
# answer to the page's data request. Without, it is the answer to the code's load: the browser tells the page only
# that a script failed, and the UI never gets as far as asking for any data.
@pytest.mark.parametrize(
    ("code_loaded", "refused"),
    [(True, "registered-models/search"), (False, "/static-files/")],
    ids=["data-request", "code-load"],
)
def test_a_401_in_the_ui_shows_the_banner_even_without_the_status_feed(lab, stack, artifacts_dir, code_loaded, refused):
    server, page = lab
    if not server.status()["signed_in"]:
        server.sign_in(stack, "alice")
    ui = page.context.new_page()
    # Only what the UI itself loads can tell the overlay that the sign-in has ended: its long poll is cut off.
    ui.route(lambda url: "oauth/status" in url and "since=" in url, lambda route: route.abort())
    if code_loaded:
        open_and_load(ui, server.ui_url + "#/models", "registered-models/search")
    open_and_load(ui, server.ui_url + "#/experiments", "experiments/search")
    ui.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=60_000)
    server.http().post(server.ui_url + "oauth/logout", headers={"Accept": "application/json"}, timeout=30)

    with ui.expect_response(lambda r: refused in r.url and r.status == 401, timeout=60_000):
        ui.goto(server.ui_url + "#/models")

    ui.locator("#mlflow-oidc-banner", has_text="Your MLflow sign-in has ended").wait_for(timeout=30_000)
    assert "Sign in" in ui.locator("#mlflow-oidc-identity").inner_text()
    ui.screenshot(path=artifacts_dir / f"mlflow-ui-401-banner-{'data' if code_loaded else 'code'}.png")
    ui.close()


def test_sign_out_from_the_ui_chip_says_what_it_ends_and_ends_it(lab, stack, artifacts_dir):
    server, page = lab
    if not server.status()["signed_in"]:
        server.sign_in(stack, "alice")
    ui = page.context.new_page()
    ui.goto(server.ui_url)
    ui.locator("#mlflow-oidc-user", has_text="alice").wait_for(timeout=60_000)

    ui.click("#mlflow-oidc-sign-out")
    ui.get_by_text("its notebooks use it too").wait_for(timeout=30_000)
    ui.screenshot(path=artifacts_dir / "mlflow-ui-sign-out-confirm.png")
    ui.click("#mlflow-oidc-action")
    ui.get_by_text("Signed out of MLflow").wait_for(timeout=30_000)

    assert server.status()["signed_in"] is False
    page.locator(STATUS_ITEM, has_text="signed out").wait_for(timeout=30_000)
    ui.close()


def test_under_another_prefix_the_status_bar_and_the_card_use_it(start_jupyter, chromium):
    server = start_jupyter(app="jupyterlab", args=("--MLflowOIDC.prefix=tracking",))
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{server.url}lab?token={server.token}")
        page.locator(STATUS_ITEM, has_text="MLflow: signed out").wait_for(timeout=90_000)  # read from /tracking/
        documents: list[str] = []
        context.on("request", lambda r: documents.append(r.url) if r.resource_type == "document" else None)
        with page.context.expect_page() as opened:
            page.locator(".jp-LauncherCard", has_text="MLflow").first.click()
        opened.value.wait_for_load_state()
        assert documents[0] == server.url + "tracking/oauth/login?next=%2Ftracking%2F&reuse=1", documents
    finally:
        context.close()
