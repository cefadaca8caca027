"""Fixtures: mlflow-oidc-auth (`stack/run up --server mlflow-oidc-auth`) per identity provider, and its users.

Every test of the tier runs against the local provider and against Keycloak. The Keycloak variant puts
mlflow-oidc-auth in front of the session's one Keycloak (tests/support/keycloak.py, shared with tests/keycloak) as
`stack/run up --server mlflow-oidc-auth --issuer <realm>` does: the same Keycloak settings as `--idp keycloak`
(stack/oidc_auth.py, the table in docs/servers.md), without a second Keycloak start.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from stack.localstack import ExternalProvider, LocalStack

from ..conftest import Stack
from ..keycloak import http_pages as keycloak_http
from ..keycloak import pages as keycloak_pages
from ..server.conftest import JupyterServer, start_jupyter  # noqa: F401 (start_jupyter: a fixture, `on=` a stack)
from ..support import idp_pages
from ..support.keycloak import FIRST_START_TIMEOUT, KeycloakStack

CLI = str(Path(sys.executable).parent / "mlflow-oidc")
PROVIDERS = ("local", "keycloak")
DEVICE_LINK = re.compile(r"(http://\S+/device\S*)")


class OIDCAuthStack(Stack):
    """mlflow-oidc-auth and the provider it trusts, as the tier's tests use them, whichever provider that is."""

    def __init__(self, local: LocalStack, endpoints: dict, provider: str, keycloak: KeycloakStack | None = None,
                 approve_in_browser: Callable[[str, str, str], None] | None = None) -> None:  # fmt: skip
        super().__init__(local, endpoints)
        self.provider = provider
        self.keycloak = keycloak
        self._approve_in_browser = approve_in_browser

    def display_name(self, user: str) -> str:
        """The `name` claim the provider puts in the user's tokens (mlflow-oidc-auth's menu shows it)."""
        if self.keycloak is None:
            from stack.localstack import DEMO_USERS

            return DEMO_USERS[user]["name"]
        found = self.keycloak.admin.user(user)
        return f"{found['firstName']} {found['lastName']}"

    def service_account(self, client: str) -> str:
        """The user name a client-credentials token of `client` carries (Keycloak names a service account)."""
        return client if self.keycloak is None else f"service-account-{client}"

    def approve_device(self, url: str, user: str) -> None:
        """What the person does with the device link: the local IdP's pages over HTTP, Keycloak's in Chromium."""
        if self._approve_in_browser is None:
            idp_pages.approve_device(url, user, self.password(user))
        else:
            self._approve_in_browser(url, user, self.password(user))

    def authorize(self, url: str, user: str) -> str:
        """Sign in at an authorization URL over HTTP; the redirect back to the client (not followed)."""
        sign_in = idp_pages.authorize if self.keycloak is None else keycloak_http.authorize
        return sign_in(url, user, self.password(user))


@pytest.fixture(scope="session", params=PROVIDERS)
def oidc_auth(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCAuthStack]:
    """`mlflow server --app-name oidc-auth` (its own Python 3.12 venv) validating the provider's tokens."""
    local = LocalStack(tmp_path_factory.mktemp(f"oidc-auth-{request.param}"), server="mlflow-oidc-auth",
                       log=lambda _message: None)  # fmt: skip
    try:
        if request.param == "local":
            yield OIDCAuthStack(local, local.up(free_ports=True), "local")
            return
        keycloak: KeycloakStack = request.getfixturevalue("keycloak")
        chromium = request.getfixturevalue("chromium")
        endpoints = local.up(free_ports=True, external=ExternalProvider(issuer=keycloak.issuer))
        # Who may sign in, with which password and client secret: the realm's, as the Keycloak stack lists them.
        endpoints.update({k: keycloak.endpoints[k] for k in ("users", "clients", "keycloak")})
        yield OIDCAuthStack(local, endpoints, "keycloak", keycloak, approve_in_browser(chromium))
    finally:
        local.down()


def approve_in_browser(chromium) -> Callable[[str, str, str], None]:
    def approve(url: str, user: str, password: str) -> None:
        context = chromium.new_context()
        try:
            keycloak_pages.approve_device(context.new_page(), url, user, password)
        finally:
            context.close()

    return approve


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("oidc_auth") == "keycloak":
            # The first Keycloak test of the session also waits for Keycloak's start (minutes under load).
            item.add_marker(pytest.mark.timeout(FIRST_START_TIMEOUT))


def sign_in(server: JupyterServer, stack: OIDCAuthStack, user: str) -> None:
    """The Jupyter server's sign-in as a browser does it, over HTTP on the provider's login page."""
    http = server.http()
    start = http.get(server.ui_url + "oauth/login", allow_redirects=False, timeout=30)
    assert start.status_code == 302, start.text
    done = http.get(stack.authorize(start.headers["Location"], user), allow_redirects=False, timeout=30)
    assert done.status_code == 302, done.text


class Terminal:
    """A user's shell pointed at the mlflow-oidc-auth server, with a token cache of its own."""

    def __init__(self, stack: OIDCAuthStack, home: Path) -> None:
        self.stack = stack
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_OIDC_", "MLFLOW_TRACKING_"))}
        self.env.update(
            HOME=str(home),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_CONFIG_HOME=str(home / ".config"),
            MLFLOW_OIDC_ISSUER=stack.issuer,
            MLFLOW_OIDC_CLIENT_ID="jupyter",
            MLFLOW_OIDC_AUDIENCE=stack.endpoints["audience"],
            MLFLOW_TRACKING_URI=stack.mlflow_url,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([CLI, *args], env=self.env, capture_output=True, text=True, timeout=120)

    def login(self, user: str) -> str:
        """`mlflow-oidc login` (device flow), approved on the provider's pages as `user`; returns what it printed."""
        proc = subprocess.Popen([CLI, "login"], env=self.env, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        try:
            shown, link = [], None
            for line in proc.stderr:
                shown.append(line)
                found = DEVICE_LINK.search(line)
                if found:
                    link = found.group(1)
                    break
            assert link, "".join(shown)
            # The rest of its output (a few lines) is read meanwhile, so that it never blocks on a full pipe.
            reader = threading.Thread(target=lambda: shown.extend(proc.stderr or ()), daemon=True)
            reader.start()
            self.stack.approve_device(link, user)
            assert proc.wait(timeout=120) == 0, "".join(shown)
            reader.join(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return "".join(shown)

    def python(self, script: Path) -> subprocess.CompletedProcess:
        """`MLFLOW_TRACKING_AUTH=oidc python script.py`, nothing else configured in the script."""
        env = {**self.env, "MLFLOW_TRACKING_AUTH": "oidc"}
        return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        """A REST call to mlflow-oidc-auth with this terminal's token (`mlflow-oidc token`), as curl would do it."""
        token = self.cli("token").stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        return requests.request(method, self.stack.mlflow_url + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def terminal(oidc_auth: OIDCAuthStack, tmp_path: Path) -> Terminal:
    home = tmp_path / "home"
    home.mkdir()
    return Terminal(oidc_auth, home)


@pytest.fixture
def make_terminal(oidc_auth: OIDCAuthStack, tmp_path: Path):
    """Several users' terminals in one test, each with its own home."""

    def make(name: str) -> Terminal:
        home = tmp_path / name
        home.mkdir()
        return Terminal(oidc_auth, home)

    return make
