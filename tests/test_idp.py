"""The local OpenID Provider (stack/idp): the flows, tokens and pages the rest of the project relies on."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.jose import JsonWebKey, jwt

from .support.idp_pages import IdPPageError, approve_device, authorize, deny_device, logout

pytestmark = pytest.mark.stack  # starts the IdP (node) for this module

SERVER = Path(__file__).resolve().parent.parent / "stack" / "idp" / "server.mjs"
REDIRECT_URI = "http://127.0.0.1:8976/callback"  # never served: authorize() returns the redirect unrequested
USERS = {
    "alice": {"password": "alice-pw", "roles": ["Admin"], "email": "alice@example.org", "name": "Alice"},
    "bob": {"password": "bob-pw", "roles": ["Default"]},
}
BOT_SECRET = "ci-bot-test-secret"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class IdP:
    """One IdP process on a free loopback port, configured like the stack configures it."""

    def __init__(self, run_dir: Path, jupyter: dict | None = None) -> None:
        self.run_dir = run_dir
        self.keys_file = run_dir / "keys.json"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.issuer = f"http://127.0.0.1:{self.port}"
        config = {
            "issuer": self.issuer,
            "port": self.port,
            "keys_file": str(self.keys_file),
            "audience": "mlflow",
            "users": USERS,
            "clients": {
                "jupyter": {"client_id": "jupyter", **(jupyter or {})},
                "ci-bot": {"client_id": "ci-bot", "client_secret": BOT_SECRET, "roles": ["Default"]},
            },
        }
        self.config_file = run_dir / "idp.json"
        self.config_file.write_text(json.dumps(config))
        self.config_file.chmod(0o600)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "IDP_CONFIG": str(self.config_file)}
        log = (self.run_dir / "idp.log").open("ab")
        self.process = subprocess.Popen(["node", str(SERVER)], env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.metadata = requests.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).json()
                return
            except requests.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"IdP did not start: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)

    def log(self) -> str:
        return (self.run_dir / "idp.log").read_text(errors="replace")

    def jwks(self) -> dict:
        return requests.get(self.metadata["jwks_uri"], timeout=5).json()

    def claims(self, token: str) -> dict:
        """Verify an access token's signature against the published JWKS and return its claims."""
        claims = jwt.decode(token, JsonWebKey.import_key_set(self.jwks()))
        claims.validate()
        return dict(claims)

    def jupyter(self, scope: str = "openid profile email offline_access", **kwargs) -> OAuth2Session:
        return OAuth2Session("jupyter", scope=scope, token_endpoint_auth_method="none", **kwargs)

    def sign_in(
        self, username: str, scope: str = "openid profile email offline_access", browser: requests.Session | None = None
    ) -> dict:
        """Auth code + PKCE through the login page, as the jupyter client."""
        client = self.jupyter(scope, redirect_uri=REDIRECT_URI, code_challenge_method="S256")
        verifier = generate_token(48)
        url, state = client.create_authorization_url(self.metadata["authorization_endpoint"], code_verifier=verifier)
        callback = authorize(url, username, USERS[username]["password"], session=browser)
        return dict(
            client.fetch_token(
                self.metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state
            )
        )


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    server = IdP(tmp_path_factory.mktemp("idp"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_auth_code_with_pkce_gives_a_jwt_access_token_for_mlflow(idp: IdP) -> None:
    tokens = idp.sign_in("alice")

    claims = idp.claims(tokens["access_token"])
    assert claims["aud"] == "mlflow"
    assert claims["iss"] == idp.issuer
    assert claims["preferred_username"] == "alice"
    assert claims["roles"] == ["Admin"]
    assert claims["email"] == "alice@example.org"
    assert claims["sub"] != "alice"
    assert tokens["refresh_token"]
    assert "offline_access" in tokens["scope"].split()  # granted without the client sending prompt=consent
    assert "token issued client=jupyter grant_type=authorization_code user=alice" in idp.log()


def test_the_callback_carries_the_issuer(idp: IdP) -> None:
    client = idp.jupyter(redirect_uri=REDIRECT_URI, code_challenge_method="S256")
    url, state = client.create_authorization_url(idp.metadata["authorization_endpoint"], code_verifier="v" * 48)

    query = parse_qs(urlsplit(authorize(url, "bob", "bob-pw")).query)

    assert query["iss"] == [idp.issuer]
    assert query["state"] == [state]


def test_an_authorization_request_without_pkce_is_refused(idp: IdP) -> None:
    url, _ = idp.jupyter(redirect_uri=REDIRECT_URI).create_authorization_url(idp.metadata["authorization_endpoint"])

    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]

    assert location.startswith(REDIRECT_URI)
    assert parse_qs(urlsplit(location).query)["error"] == ["invalid_request"]


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:41234/", "http://localhost:8888/user/bob/mlflow/oauth/callback",
     "https://127.0.0.1:8888/mlflow/oauth/callback"],
)  # fmt: skip
def test_loopback_and_jupyter_callbacks_on_any_port_are_accepted(idp: IdP, redirect_uri: str) -> None:
    client = idp.jupyter(redirect_uri=redirect_uri, code_challenge_method="S256")
    url, _ = client.create_authorization_url(idp.metadata["authorization_endpoint"], code_verifier="v" * 48)

    assert authorize(url, "bob", "bob-pw").startswith(redirect_uri + "?code=")


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://evil.example/mlflow/oauth/callback", "http://localhost:8888/other/callback",
     "https://localhost:8888/mlflow/oauth/callback"],
)  # fmt: skip
def test_other_redirect_uris_are_refused_with_an_error_page(idp: IdP, redirect_uri: str) -> None:
    client = idp.jupyter(redirect_uri=redirect_uri, code_challenge_method="S256")
    url, _ = client.create_authorization_url(idp.metadata["authorization_endpoint"], code_verifier="v" * 48)

    answer = requests.get(url, allow_redirects=False, timeout=5)

    assert answer.status_code == 400
    assert "redirect_uri" in answer.text


def test_a_wrong_password_shows_the_login_page_again_with_an_error(idp: IdP) -> None:
    client = idp.jupyter(redirect_uri=REDIRECT_URI, code_challenge_method="S256")
    url, _ = client.create_authorization_url(idp.metadata["authorization_endpoint"], code_verifier="v" * 48)

    with pytest.raises(IdPPageError, match="Invalid username or password"):
        authorize(url, "alice", "not-her-password")
    assert "login failed user=alice" in idp.log()
    assert "not-her-password" not in idp.log()


def test_after_a_wrong_password_the_user_can_try_again(idp: IdP) -> None:
    client = idp.jupyter(redirect_uri=REDIRECT_URI, code_challenge_method="S256")
    url, _ = client.create_authorization_url(idp.metadata["authorization_endpoint"], code_verifier="v" * 48)
    browser = requests.Session()
    login_page = browser.get(url, timeout=5)

    wrong = browser.post(f"{login_page.url}/login", data={"username": "bob", "password": "nope"}, timeout=5)
    assert wrong.status_code == 401 and "Invalid username or password" in wrong.text
    answer = browser.post(wrong.url, data={"username": "bob", "password": "bob-pw"}, allow_redirects=False)
    while not answer.headers["Location"].startswith(REDIRECT_URI):
        answer = browser.get(urljoin(answer.url, answer.headers["Location"]), allow_redirects=False, timeout=5)

    assert answer.headers["Location"].startswith(REDIRECT_URI + "?code=")


def test_device_flow_approved_in_the_browser_gives_tokens(idp: IdP) -> None:
    client = idp.jupyter(scope="openid profile offline_access")
    device = requests.post(
        idp.metadata["device_authorization_endpoint"],
        data={"client_id": "jupyter", "scope": "openid profile offline_access"},
        timeout=5,
    ).json()
    with pytest.raises(OAuthError, match="authorization_pending"):
        client.fetch_token(idp.metadata["token_endpoint"], grant_type=DEVICE_GRANT, device_code=device["device_code"])

    approve_device(device["verification_uri_complete"], "bob", "bob-pw")
    tokens = client.fetch_token(
        idp.metadata["token_endpoint"], grant_type=DEVICE_GRANT, device_code=device["device_code"]
    )

    claims = idp.claims(tokens["access_token"])
    assert (claims["aud"], claims["preferred_username"], claims["roles"]) == ("mlflow", "bob", ["Default"])
    assert tokens["refresh_token"]


def test_a_device_sign_in_denied_in_the_browser_gives_access_denied(idp: IdP) -> None:
    client = idp.jupyter(scope="openid profile offline_access")
    device = requests.post(
        idp.metadata["device_authorization_endpoint"],
        data={"client_id": "jupyter", "scope": "openid profile offline_access"},
        timeout=5,
    ).json()

    deny_device(device["verification_uri_complete"])

    with pytest.raises(OAuthError, match="access_denied"):
        client.fetch_token(idp.metadata["token_endpoint"], grant_type=DEVICE_GRANT, device_code=device["device_code"])


def test_ci_bot_gets_a_jwt_by_client_credentials(idp: IdP) -> None:
    bot = OAuth2Session("ci-bot", BOT_SECRET)

    token = bot.fetch_token(idp.metadata["token_endpoint"], grant_type="client_credentials")

    claims = idp.claims(token["access_token"])
    assert (claims["aud"], claims["sub"], claims["preferred_username"]) == ("mlflow", "ci-bot", "ci-bot")
    assert claims["roles"] == ["Default"]
    assert BOT_SECRET not in idp.log()


def test_refresh_rotates_and_reusing_a_spent_refresh_token_revokes_the_grant(idp: IdP) -> None:
    first = idp.sign_in("bob", scope="openid profile")  # no offline_access: session-bound, still refreshable
    client = idp.jupyter(scope="openid profile")

    second = client.refresh_token(idp.metadata["token_endpoint"], refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert idp.claims(second["access_token"])["aud"] == "mlflow"

    with pytest.raises(OAuthError, match="invalid_grant"):
        client.refresh_token(idp.metadata["token_endpoint"], refresh_token=first["refresh_token"])
    with pytest.raises(OAuthError, match="invalid_grant"):
        client.refresh_token(idp.metadata["token_endpoint"], refresh_token=second["refresh_token"])


def test_token_answers_announce_the_refresh_tokens_idle_limit_like_keycloak(idp: IdP) -> None:
    first = idp.sign_in("bob", scope="openid profile")  # session-bound: idle limit 8 h (IDP_REFRESH_TOKEN_TTL)
    client = idp.jupyter(scope="openid profile")

    second = client.refresh_token(idp.metadata["token_endpoint"], refresh_token=first["refresh_token"])

    assert first["refresh_expires_in"] == 8 * 3600
    assert 8 * 3600 - 5 <= second["refresh_expires_in"] <= 8 * 3600


def test_logout_ends_the_session_and_its_refresh_tokens(idp: IdP) -> None:
    browser = requests.Session()
    tokens = idp.sign_in("bob", scope="openid profile", browser=browser)
    query = urlencode({"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "http://127.0.0.1:5555/bye"})

    assert logout(f"{idp.metadata['end_session_endpoint']}?{query}", browser) == "http://127.0.0.1:5555/bye"
    with pytest.raises(OAuthError, match="invalid_grant"):
        idp.jupyter(scope="openid profile").refresh_token(idp.metadata["token_endpoint"], tokens["refresh_token"])


def test_a_fresh_keys_file_rotates_the_signing_key_and_sessions_survive_the_restart(tmp_path: Path) -> None:
    server = IdP(tmp_path)
    try:
        server.start()
        old_kid = server.jwks()["keys"][0]["kid"]
        tokens = server.sign_in("alice")
        assert oct(server.keys_file.stat().st_mode & 0o777) == "0o600"
        server.stop()
        server.keys_file.unlink()
        server.start()

        assert [key["kid"] for key in server.jwks()["keys"]] != [old_kid]
        refreshed = server.jupyter().refresh_token(server.metadata["token_endpoint"], tokens["refresh_token"])
        assert jwt.decode(refreshed["access_token"], JsonWebKey.import_key_set(server.jwks())).header["kid"] != old_kid
    finally:
        server.stop()


def test_a_refresh_in_flight_when_the_idp_is_stopped_is_answered_and_its_rotation_kept(tmp_path: Path) -> None:
    """SIGTERM lets a request in flight finish: cutting a refresh off halfway would leave the client holding a spent
    refresh token (the rotation is saved before the answer), and its next refresh would end the session."""
    server = IdP(tmp_path)
    try:
        server.start()
        spent = server.sign_in("alice")["refresh_token"]
        body = urlencode({"grant_type": "refresh_token", "refresh_token": spent, "client_id": "jupyter"}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.putrequest("POST", urlsplit(server.metadata["token_endpoint"]).path)
        for name, value in {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(body)),
            "Expect": "100-continue",  # node answers 100 once it has parsed the headers: the request is in flight
        }.items():
            connection.putheader(name, value)
        connection.endheaders()
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = connection.sock.recv(1)
            assert chunk, "the IdP closed the connection before answering 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100")

        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGTERM)
        connection.send(body)
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()[:200]
        fresh = json.loads(answer.read())["refresh_token"]
        server.process.wait(timeout=10)  # and then it stops

        server.start()
        client = server.jupyter()
        assert client.refresh_token(server.metadata["token_endpoint"], refresh_token=fresh)["access_token"]
    finally:
        server.stop()


# Beside a hub (what `stack/run up --jupyterhub` writes): the public client takes exactly the listed redirect URIs,
# none by default, and then only the device flow (docs/jupyterhub.md, "Provider registration").
HUB_REDIRECT = "http://127.0.0.1:8976/exact/callback"


@pytest.fixture(scope="module")
def hub_idp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdP]:
    server = IdP(tmp_path_factory.mktemp("hub-idp"), jupyter={"exact_redirect_uris": []})
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://127.0.0.1:41234/", "http://127.0.0.1:41234/oauth/callback",
     "http://127.0.0.1:8000/user/mallory/mlflow/oauth/callback", "http://[::1]:41234/mlflow/oauth/callback"],
)  # fmt: skip
def test_beside_a_hub_the_jupyter_client_takes_no_browser_redirect(hub_idp: IdP, redirect_uri: str) -> None:
    client = hub_idp.jupyter(redirect_uri=redirect_uri, code_challenge_method="S256")
    url, _ = client.create_authorization_url(hub_idp.metadata["authorization_endpoint"], code_verifier="v" * 48)

    answer = requests.get(url, allow_redirects=False, timeout=5)

    assert answer.status_code == 400 and "Location" not in answer.headers


def test_beside_a_hub_the_jupyter_client_still_signs_in_with_the_device_flow(hub_idp: IdP) -> None:
    client = hub_idp.jupyter(scope="openid profile offline_access")
    device = requests.post(
        hub_idp.metadata["device_authorization_endpoint"],
        data={"client_id": "jupyter", "scope": "openid profile offline_access"},
        timeout=5,
    ).json()
    approve_device(device["verification_uri_complete"], "bob", "bob-pw")
    tokens = client.fetch_token(
        hub_idp.metadata["token_endpoint"], grant_type=DEVICE_GRANT, device_code=device["device_code"]
    )

    assert hub_idp.claims(tokens["access_token"])["preferred_username"] == "bob"
    assert client.refresh_token(hub_idp.metadata["token_endpoint"], tokens["refresh_token"])["access_token"]


def test_exact_redirect_uris_for_the_jupyter_client_are_matched_exactly(tmp_path: Path) -> None:
    server = IdP(tmp_path, jupyter={"exact_redirect_uris": [HUB_REDIRECT]})
    try:
        server.start()
        endpoint = server.metadata["authorization_endpoint"]

        def authorization_url(redirect_uri: str) -> str:
            client = server.jupyter(redirect_uri=redirect_uri, code_challenge_method="S256")
            return client.create_authorization_url(endpoint, code_verifier="v" * 48)[0]

        assert authorize(authorization_url(HUB_REDIRECT), "bob", "bob-pw").startswith(HUB_REDIRECT + "?code=")
        other_port = requests.get(authorization_url(HUB_REDIRECT.replace("8976", "8977")), timeout=5)
        assert other_port.status_code == 400 and "redirect_uri" in other_port.text
    finally:
        server.stop()


def test_a_wildcard_among_the_jupyter_clients_exact_redirect_uris_stops_the_idp(tmp_path: Path) -> None:
    server = IdP(tmp_path, jupyter={"exact_redirect_uris": ["http://127.0.0.1:8000/user/*"]})
    with pytest.raises(RuntimeError, match="no wildcards"):
        server.start()
    server.stop()
