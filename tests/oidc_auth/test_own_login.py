"""mlflow-oidc-auth's own browser sign-in, with the stack's settings: the provider's login page, then its UI."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_its_own_login_page_signs_a_browser_in_at_the_provider(oidc_auth, chromium, artifacts_dir):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(oidc_auth.mlflow_url + "/")
        page.get_by_text("Login with OIDC").click()
        page.fill("#username", "bob")
        page.fill("#password", oidc_auth.password("bob"))
        page.click("button[type=submit]")

        # Back at the server with a session of its own, as the user the provider's claims name (no admin: Default).
        page.get_by_text("Hello, Bob Default").first.wait_for(timeout=60_000)
        assert page.url.startswith(oidc_auth.mlflow_url + "/oidc/ui/")
        assert page.get_by_text("You have administrator privileges").count() == 0
        page.screenshot(path=artifacts_dir / "oidc-auth-own-login.png")
    finally:
        context.close()
