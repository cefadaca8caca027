"""One user's credentials never reach another user's MLflow session; an attacker's sign-in link yields nothing,
through the hub's client or the public `jupyter` client; hub logout ends MLflow access. On both providers."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest
import requests

from ..keycloak.pages import confirm_logout_if_asked
from ..support.kernels import run_in_kernel
from .conftest import ACCESS_TOKEN_TTL, ProviderRecord, is_keycloak, sign_in_again, sign_in_at_provider

pytestmark = [pytest.mark.slow, pytest.mark.browser]
PROVIDERS = ("local", "keycloak")

#: What a kernel knows: its server's hub token and broker, and the hub's token endpoint for its user.
KERNEL_CREDENTIALS = """
import json, os
print(json.dumps({k: os.environ[k] for k in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL",
                                           "MLFLOW_OIDC_BROKER_URL", "MLFLOW_OIDC_BROKER_SECRET")}))
"""


@pytest.fixture(scope="module")
def credentials(hub_users):
    """Each user's server token and broker (read in a kernel of theirs, as their own code could)."""
    return {name: json.loads(run_in_kernel(user, KERNEL_CREDENTIALS)) for name, user in hub_users.items()}


def token_url(hub_api: str, name: str) -> str:
    return f"{hub_api}/mlflow-oidc/users/{name}/token"


def test_a_servers_hub_token_gets_its_own_users_tokens_and_nobody_elses(credentials):
    alice = credentials["alice"]
    headers = {"Authorization": f"token {alice['JUPYTERHUB_API_TOKEN']}"}

    own = requests.get(token_url(alice["JUPYTERHUB_API_URL"], "alice"), headers=headers, timeout=30)
    other = requests.get(token_url(alice["JUPYTERHUB_API_URL"], "bob"), headers=headers, timeout=30)

    assert own.status_code == 200 and own.json()["identity"]["username"] == "alice"
    assert "refresh_token" not in own.text  # the refresh token never leaves the hub
    assert other.status_code in (403, 404) and "access_token" not in other.text


def test_a_users_api_token_is_refused_at_another_users_server_and_token_endpoint(hub_users, credentials):
    alice, bob = hub_users["alice"], hub_users["bob"]
    as_alice = alice.http()

    assert as_alice.get(bob.url + "api/status", timeout=30).status_code == 403
    assert as_alice.get(bob.ui_url + "oauth/status", timeout=30).status_code == 403
    answer = as_alice.get(bob.ui_url + "api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert answer.status_code == 403 and "experiments" not in answer.text
    hub_api = credentials["alice"]["JUPYTERHUB_API_URL"]
    assert as_alice.get(token_url(hub_api, "bob"), timeout=30).status_code in (403, 404)


def test_a_users_browser_cookies_are_refused_at_another_users_server(hub_users):
    alice, bob = hub_users["alice"], hub_users["bob"]
    page = alice.context.new_page()
    try:
        response = page.goto(bob.ui_url + "#/experiments")
        assert response is not None and response.status == 403
        assert "Experiments" not in page.content()
        status = alice.context.request.get(bob.ui_url + "oauth/status", max_redirects=0)
        assert status.status != 200 or '"signed_in": true' not in status.text()
    finally:
        page.close()


def test_a_users_broker_secret_and_tokens_are_refused_at_another_users_broker(credentials):
    alice, bob = credentials["alice"], credentials["bob"]

    wrong_secret = requests.get(
        bob["MLFLOW_OIDC_BROKER_URL"], headers={"X-MLflow-OIDC-Broker": alice["MLFLOW_OIDC_BROKER_SECRET"]}, timeout=30
    )
    hub_token = requests.get(
        bob["MLFLOW_OIDC_BROKER_URL"], headers={"Authorization": f"token {alice['JUPYTERHUB_API_TOKEN']}"}, timeout=30
    )

    assert wrong_secret.status_code == 403 and "access_token" not in wrong_secret.text
    assert hub_token.status_code == 403 and "access_token" not in hub_token.text


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args) -> None:
        return None


@pytest.fixture
def attacker():
    """The attacker's callback: a listener on a loopback port of the hub's host (anyone there can open one)."""
    _Recorder.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def open_attackers_links(hub_stack, victim_context, client_id: str, callbacks: list[str]) -> list[str]:
    """The victim, signed in at the provider, opens the attacker's authorization URLs (his PKCE verifier, his
    callbacks); returns the text of the page each one ended on."""
    discovery = requests.get(hub_stack.issuer + "/.well-known/openid-configuration", timeout=30).json()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    pages = []
    victim = victim_context.new_page()
    try:
        for callback in callbacks:
            query = urlencode(
                {
                    "client_id": client_id,
                    "response_type": "code",
                    "scope": "openid profile offline_access",
                    "redirect_uri": callback,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "state": "attacker",
                }
            )
            victim.goto(f"{discovery['authorization_endpoint']}?{query}")
            assert victim.url.startswith(hub_stack.issuer + "/"), victim.url  # the provider kept the browser
            pages.append(victim.inner_text("body"))
    finally:
        victim.close()
    return pages


@pytest.fixture(scope="module")
def victim(hub_stack, hub_users):
    """alice, signed in at the provider in her browser: an authorization request of hers needs no password."""
    sign_in_at_provider(hub_users["alice"], hub_stack)
    return hub_users["alice"]


def test_the_victim_is_signed_in_at_the_provider(hub_stack, victim):
    """What makes the attacks below dangerous: a sign-in link passes without any password."""
    page = victim.context.new_page()
    try:
        if is_keycloak(hub_stack):  # Keycloak's account console, a client of its own, opens without its login form
            page.goto(hub_stack.issuer + "/account/")
            page.get_by_text("Personal info").first.wait_for(timeout=60_000)
            assert not page.locator("#kc-login").count()
        else:
            page.goto(f"{victim.hub}/hub/oauth_login?next=/hub/home")
            page.wait_for_url(f"{victim.hub}/hub/home**", timeout=60_000)
    finally:
        page.close()


def test_an_attackers_authorization_url_for_the_hubs_client_yields_nothing(hub_stack, hub_users, victim, attacker):
    """The attack of issue 14: his PKCE verifier, a redirect to his own callback, the victim's signed-in browser."""
    hub = hub_users["alice"].hub
    callbacks = [
        f"{attacker}/hub/oauth_callback",  # his server, the hub's path
        f"{hub}/user/bob/oauth_callback",  # what a `{hub}/user/*` wildcard would have let through
        f"{hub}/user/bob/mlflow/oauth/callback",
    ]
    record = ProviderRecord(hub_stack)

    pages = open_attackers_links(hub_stack, victim.context, "jupyterhub", callbacks)

    assert _Recorder.hits == []
    assert all("redirect_uri" in text for text in pages), pages  # the provider said why
    assert record.refused_authorizations("jupyterhub") >= len(callbacks)
    assert record.codes_exchanged("jupyterhub") == 0  # no code, so no tokens


def test_an_attackers_authorization_url_for_the_public_jupyter_client_yields_nothing(
    hub_stack, hub_users, victim, attacker
):
    """The same link through the public `jupyter` client, which alone on one machine accepts any loopback port:
    beside a hub it takes no browser redirect at all (device flow only), so no code reaches the attacker."""
    hub = hub_users["alice"].hub
    callbacks = [
        f"{attacker}/oauth/callback",  # RFC 8252's loopback redirect, as the CLI's
        f"{attacker}/mlflow/oauth/callback",  # a Jupyter server's callback, on his port
        f"{hub}/user/bob/mlflow/oauth/callback",  # his own server's callback, under the hub
    ]
    record = ProviderRecord(hub_stack)

    open_attackers_links(hub_stack, victim.context, "jupyter", callbacks)

    assert _Recorder.hits == []
    assert record.refused_authorizations("jupyter") >= len(callbacks)
    assert record.codes_exchanged("jupyter") == 0  # no code, so no tokens


def test_the_public_jupyter_client_still_signs_in_with_the_device_flow_beside_a_hub(hub_stack):
    """What the CLI uses on the hub's host: a device code, confirmed on the provider's own page."""
    discovery = requests.get(hub_stack.issuer + "/.well-known/openid-configuration", timeout=30).json()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(b"v" * 43).digest()).rstrip(b"=").decode()
    form = {"client_id": "jupyter", "scope": "openid", "code_challenge": challenge, "code_challenge_method": "S256"}
    answer = requests.post(discovery["device_authorization_endpoint"], data=form, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["user_code"] and answer.json()["verification_uri"].startswith(hub_stack.issuer)


def test_hub_logout_ends_mlflow_access(hub_stack, hub_users, credentials):
    """Bob signs out at the hub, and his server and kernels lose MLflow."""
    bob = hub_users["bob"]
    own_token = {"Authorization": f"token {credentials['bob']['JUPYTERHUB_API_TOKEN']}"}
    endpoint = token_url(credentials["bob"]["JUPYTERHUB_API_URL"], "bob")
    assert requests.get(endpoint, headers=own_token, timeout=30).status_code == 200

    record = ProviderRecord(hub_stack)
    if is_keycloak(hub_stack):
        admin, earlier = hub_stack.admin, {s["id"] for s in hub_stack.admin.sessions("bob")}
        sign_in_at_provider(bob, hub_stack)  # a Keycloak session of his browser, beside the hub's offline one
        browser_sessions = {s["id"] for s in admin.sessions("bob")} - earlier
        offline = {s["id"] for s in admin.offline_sessions("bob", "jupyterhub")}
        assert browser_sessions and offline

    bob.page.goto(f"{bob.hub}/hub/logout")  # via the IdP's end-session page
    bob.page.wait_for_url(lambda url: url.startswith((f"{bob.hub}/hub/login", hub_stack.issuer + "/")))
    # Keycloak asks "Do you want to log out?" when it holds a session: the hub sends no id_token_hint (ID tokens
    # stay out of URLs), so the person confirms, as on any site that signs out of Keycloak without one.
    confirm_logout_if_asked(bob.page)
    bob.page.wait_for_url(f"{bob.hub}/hub/login**", timeout=60_000)

    answer = requests.get(endpoint, headers=own_token, timeout=30)
    assert answer.status_code == 401 and "signed out at the hub" in answer.json()["message"]
    if is_keycloak(hub_stack):  # his Keycloak session is over, the offline one (the hub's refresh token) too
        assert not browser_sessions & {s["id"] for s in admin.sessions("bob")}
        assert len({s["id"] for s in admin.offline_sessions("bob", "jupyterhub")}) < len(offline)
    else:
        assert record.logouts("jupyterhub")
    # His server's copy of the access token expires within the token's life; then nothing more reaches MLflow.
    out = run_in_kernel(
        bob,
        "import time, mlflow\n"
        f"deadline = time.monotonic() + {ACCESS_TOKEN_TTL[hub_stack.endpoints['idp']]} + 60\n"
        "while True:\n"
        "    try:\n"
        "        mlflow.search_experiments()\n"
        "    except Exception as exc:\n"
        "        print('REFUSED', exc)\n"
        "        break\n"
        "    if time.monotonic() > deadline:\n"
        "        print('STILL SIGNED IN')\n"
        "        break\n"
        "    time.sleep(0.5)\n",
    )
    assert "REFUSED" in out and "signed out at the hub" in out, out
    assert not bob.http().get(bob.ui_url + "oauth/status", timeout=30).json()["signed_in"]

    sign_in_again(bob, hub_stack)  # and back: the next sign-in at the hub brings MLflow back
    assert requests.get(endpoint, headers=own_token, timeout=30).status_code == 200
    # Straight to the UI: his server's own cookie went with the logout, so this passes the hub's OAuth first.
    bob.page.goto(bob.ui_url + "#/experiments")
    bob.page.get_by_role("heading", name="Experiments").wait_for(timeout=60_000)
