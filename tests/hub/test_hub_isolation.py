"""One user's credentials never reach another user's MLflow session; an attacker's sign-in link yields nothing;
hub logout ends MLflow access."""

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

from ..server.kernels import run_in_kernel
from .conftest import idp_log_lines, sign_in_again

pytestmark = [pytest.mark.slow, pytest.mark.browser]

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


def test_an_attackers_authorization_url_yields_nothing(hub_stack, hub_users):
    """The attack of issue 14: his PKCE verifier, a redirect to his own callback, the victim's signed-in browser."""
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    hub = hub_users["alice"].hub
    callbacks = [
        f"http://127.0.0.1:{attacker.server_address[1]}/hub/oauth_callback",  # his server, the hub's path
        f"{hub}/user/bob/oauth_callback",  # what a `{hub}/user/*` wildcard would have let through
        f"{hub}/user/bob/mlflow/oauth/callback",
    ]
    victim = hub_users["alice"].context.new_page()  # alice is signed in at the IdP: no password would be asked
    try:
        for callback in callbacks:
            query = urlencode(
                {
                    "client_id": "jupyterhub",
                    "response_type": "code",
                    "scope": "openid profile offline_access",
                    "redirect_uri": callback,
                    "code_challenge": challenge,
                    "code_challenge_method": "S256",
                    "state": "attacker",
                }
            )
            victim.goto(f"{hub_stack.issuer}/auth?{query}")
            assert victim.url.startswith(hub_stack.issuer), victim.url  # the IdP kept the browser
            assert "redirect_uri" in victim.content()  # and said why
    finally:
        victim.close()
        attacker.shutdown()
    assert _Recorder.hits == []
    refused = idp_log_lines(hub_stack, "authorization refused", "client=jupyterhub")
    assert len(refused) >= len(callbacks)


def test_hub_logout_ends_mlflow_access(hub_stack, hub_users, credentials):
    """Bob signs out at the hub, and his server and kernels lose MLflow."""
    bob = hub_users["bob"]
    own_token = {"Authorization": f"token {credentials['bob']['JUPYTERHUB_API_TOKEN']}"}
    endpoint = token_url(credentials["bob"]["JUPYTERHUB_API_URL"], "bob")
    assert requests.get(endpoint, headers=own_token, timeout=30).status_code == 200

    bob.page.goto(f"{bob.hub}/hub/logout")
    bob.page.wait_for_url(f"{bob.hub}/hub/login**", timeout=60_000)  # via the IdP's end-session page

    answer = requests.get(endpoint, headers=own_token, timeout=30)
    assert answer.status_code == 401 and "signed out at the hub" in answer.json()["message"]
    assert idp_log_lines(hub_stack, "logout", "client=jupyterhub")
    # His server's copy of the access token expires within seconds; then nothing more reaches MLflow.
    out = run_in_kernel(
        bob,
        "import time, mlflow\n"
        "time.sleep(6)\n"
        "try:\n"
        "    mlflow.search_experiments()\n"
        "    print('STILL SIGNED IN')\n"
        "except Exception as exc:\n"
        "    print('REFUSED', exc)\n",
    )
    assert "REFUSED" in out and "signed out at the hub" in out, out
    assert not bob.http().get(bob.ui_url + "oauth/status", timeout=30).json()["signed_in"]

    sign_in_again(bob, hub_stack)  # and back: the next sign-in at the hub brings MLflow back
    assert requests.get(endpoint, headers=own_token, timeout=30).status_code == 200
    # Straight to the UI: his server's own cookie went with the logout, so this passes the hub's OAuth first.
    bob.page.goto(bob.ui_url + "#/experiments")
    bob.page.get_by_role("heading", name="Experiments").wait_for(timeout=60_000)
