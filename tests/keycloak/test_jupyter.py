"""The Jupyter server's sign-in to Keycloak in Chromium, the MLflow UI at /mlflow/, and sign-out at Keycloak."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from . import pages
from .conftest import KeycloakStack

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def session_ids(keycloak: KeycloakStack, user: str) -> set[str]:
    return {s["id"] for s in keycloak.admin.sessions(user)}


def sign_in(page, server, keycloak: KeycloakStack, user: str) -> None:
    page.goto(f"{server.ui_url}?token={server.token}")
    page.click("#mlflow-oidc-action")  # "Sign in" -> Keycloak's login page
    pages.log_in(page, user, keycloak.password(user))
    page.wait_for_url(lambda url: urlsplit(url).netloc == urlsplit(server.origin).netloc, timeout=60_000)


def sign_out(page, server) -> None:
    page.goto(server.ui_url + "oauth/logout")
    page.click("#mlflow-oidc-action")  # confirm: POST, then Keycloak's end-session endpoint with id_token_hint


def test_sign_in_shows_the_mlflow_ui_and_sign_out_ends_the_keycloak_session(start_jupyter, keycloak, chromium):
    server = start_jupyter(on=keycloak)
    context = chromium.new_context()
    page = context.new_page()
    try:
        before = session_ids(keycloak, "alice")
        sign_in(page, server, keycloak, "alice")
        page.goto(server.ui_url)
        page.get_by_text("Experiments").first.wait_for(timeout=60_000)  # MLflow's own UI, through the proxy
        assert server.status()["username"] == "alice"
        (ours,) = session_ids(keycloak, "alice") - before

        sign_out(page, server)
        page.get_by_text("Signed out of MLflow").wait_for(timeout=60_000)  # back here, not Keycloak's error page

        assert ours not in session_ids(keycloak, "alice")
        page.goto(server.ui_url)
        page.click("#mlflow-oidc-action")  # signing in again asks for the password: no leftover Keycloak session
        page.locator("#password").wait_for(timeout=60_000)
    finally:
        context.close()


def test_the_sign_out_return_address_is_configurable(start_jupyter, keycloak, chromium):
    admin = keycloak.admin
    back = f"{keycloak.mlflow_url}/signed-out-here"
    attributes = admin.client("jupyter")["attributes"]
    registered = attributes["post.logout.redirect.uris"]
    # As an admin registers it (docs/deploy.md): the same path on any loopback port.
    admin.update_client("jupyter", attributes={
        **attributes, "post.logout.redirect.uris": registered + "##http://127.0.0.1/signed-out-here"
    })  # fmt: skip
    server = start_jupyter(on=keycloak, args=(f"--MLflowOIDC.post_logout_redirect_uri={back}",))
    context = chromium.new_context()
    page = context.new_page()
    try:
        before = session_ids(keycloak, "bob")
        sign_in(page, server, keycloak, "bob")
        (ours,) = session_ids(keycloak, "bob") - before

        sign_out(page, server)
        page.wait_for_url(lambda url: url.startswith(back), timeout=60_000)

        assert ours not in session_ids(keycloak, "bob")
    finally:
        context.close()
        admin.update_client("jupyter", attributes=attributes)
