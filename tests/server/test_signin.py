"""Server-side sign-in: auth code + PKCE through the Jupyter server, kept across restarts, RP-initiated logout."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from ..support.idp_pages import authorize
from .conftest import browser_sign_in

pytestmark = pytest.mark.slow


def start_login(server, next_path: str | None = None):
    http = server.http()
    params = {"next": next_path} if next_path else {}
    answer = http.get(server.ui_url + "oauth/login", params=params, allow_redirects=False, timeout=30)
    assert answer.status_code == 302
    return http, answer.headers["Location"]


def test_login_sends_the_browser_to_the_provider_with_pkce_state_and_nonce(jupyter, stack):
    _http, location = start_login(jupyter)

    query = parse_qs(urlsplit(location).query)
    assert location.startswith(stack.issuer)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0]
    assert query["redirect_uri"] == [jupyter.ui_url.replace("/mlflow/", "/mlflow/oauth/callback")]


def test_sign_in_returns_to_the_page_that_asked_but_never_to_another_site(jupyter, stack):
    for asked, landed in [("/mlflow/#/experiments/0", "/mlflow/#/experiments/0"),
                          ("https://evil.example/", "/mlflow/"), ("//evil.example/x", "/mlflow/")]:  # fmt: skip
        http, location = start_login(jupyter, asked)
        callback = authorize(location, "alice", stack.password("alice"))

        done = http.get(callback, allow_redirects=False, timeout=30)

        assert done.status_code == 302
        assert done.headers["Location"] == landed
    assert jupyter.status()["username"] == "alice"


def test_callback_from_another_browser_or_with_unknown_state_is_refused(start_jupyter, stack):
    server = start_jupyter()
    _started_here, location = start_login(server)
    callback = authorize(location, "alice", stack.password("alice"))
    other_browser = server.http()  # authenticated to Jupyter, but without the sign-in cookie

    refused = other_browser.get(callback, allow_redirects=False, timeout=30)
    forged = other_browser.get(server.ui_url + "oauth/callback?code=x&state=forged", timeout=30)

    assert refused.status_code == 400 and "Sign-in did not complete" in refused.text
    assert forged.status_code == 400
    assert server.status()["signed_in"] is False


def test_a_restarted_server_keeps_the_sign_in(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")

    server.restart()

    assert server.status()["username"] == "alice"
    search = server.http().get(server.ui_url + "ajax-api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert search.status_code == 200


@pytest.mark.browser
def test_sign_out_ends_the_session_here_and_at_the_provider(start_jupyter, chromium, stack):
    server = start_jupyter()
    context = chromium.new_context()
    page = context.new_page()
    browser_sign_in(page, server, stack, "alice")

    page.goto(server.ui_url + "oauth/logout")
    page.click("#mlflow-oidc-action")
    page.get_by_text("Signed out of MLflow").wait_for(timeout=30_000)
    server.restart()

    assert server.status()["signed_in"] is False
    page.goto(server.ui_url)
    page.click("#mlflow-oidc-action")  # "Sign in" again: the provider asks for the password again
    page.locator("#password").wait_for(timeout=30_000)
    context.close()


def test_an_abandoned_second_sign_in_keeps_the_first(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")

    start_login(server)  # the user clicks "Sign in" again and closes the provider's tab

    assert server.status()["username"] == "alice"
    search = server.http().get(server.ui_url + "ajax-api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert search.status_code == 200
