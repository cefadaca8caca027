"""Keycloak's own pages in Chromium, as a person uses them: the login form, the device page, the logout page."""

from __future__ import annotations


def log_in(page, username: str, password: str) -> None:
    """Fill Keycloak's login form (theme keycloak.v2) and submit it."""
    page.wait_for_selector("#username")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#kc-login")


def approve_device(page, verification_uri_complete: str, username: str, password: str) -> str:
    """Open the device link, sign in; returns the text Keycloak shows at the end."""
    page.goto(verification_uri_complete)
    log_in(page, username, password)
    # Keycloak always asks the user to grant a device access, whatever the client's consent setting.
    page.get_by_text("Do you grant these access privileges?").wait_for(timeout=60_000)
    page.click("input[name=accept], button[name=accept]")
    page.get_by_text("Device Login Successful").wait_for(timeout=60_000)
    return page.inner_text("body")


def confirm_logout_if_asked(page) -> None:
    """Keycloak asks "Do you want to log out?" when the request has no id_token_hint; ours always has one."""
    if page.locator("#kc-logout").count():
        page.click("#kc-logout")


def log_in_at(page, url: str, username: str, password: str) -> str:
    """Open an authorization URL, sign in; returns the text of the page Keycloak redirected the browser to."""
    page.goto(url)
    log_in(page, username, password)
    page.wait_for_url(lambda at: at.startswith("http://127.0.0.1") and "/realms/" not in at, timeout=60_000)
    return page.inner_text("body")
