"""mlflow-oidc-auth's own browser sign-in, with the stack's settings: the provider's login page, then its UI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..keycloak import pages as keycloak_pages

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def own_login_allowed(oidc_auth) -> Iterator[None]:
    """With Keycloak, what docs/servers.md tells an admin to do for its own login: the roles in the ID token, and its
    callback among the client's redirect URIs (a loopback URI without port: any port). Undone afterwards."""
    if oidc_auth.keycloak is None:
        yield
        return
    admin = oidc_auth.keycloak.admin
    client = admin.client("jupyter")
    (mapper,) = [m for m in client["protocolMappers"] if m["name"] == "realm roles as roles"]
    mappers = f"/clients/{client['id']}/protocol-mappers/models/{mapper['id']}"
    admin.request("PUT", mappers, json={**mapper, "config": {**mapper["config"], "id.token.claim": "true"}})
    admin.update_client("jupyter", redirectUris=[*client["redirectUris"], "http://127.0.0.1/callback"])
    try:
        yield
    finally:
        admin.request("PUT", mappers, json=mapper)
        admin.update_client("jupyter", redirectUris=client["redirectUris"])


def test_its_own_login_page_signs_a_browser_in_at_the_provider(oidc_auth, own_login_allowed, chromium, artifacts_dir):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    try:
        page.goto(oidc_auth.mlflow_url + "/")
        page.get_by_text("Login with OIDC").click()
        if oidc_auth.keycloak is None:
            page.fill("#username", "bob")
            page.fill("#password", oidc_auth.password("bob"))
            page.click("button[type=submit]")
        else:
            keycloak_pages.log_in(page, "bob", oidc_auth.password("bob"))

        # Back at the server with a session of its own, as the user the provider's claims name (no admin: Default).
        page.get_by_text(f"Hello, {oidc_auth.display_name('bob')}").first.wait_for(timeout=60_000)
        assert page.url.startswith(oidc_auth.mlflow_url + "/oidc/ui/")
        assert page.get_by_text("You have administrator privileges").count() == 0
        page.screenshot(path=artifacts_dir / f"oidc-auth-{oidc_auth.provider}-own-login.png")
    finally:
        context.close()
