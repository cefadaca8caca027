"""`mlflow-oidc` against a real Keycloak: device flow on Keycloak's pages, loopback auth code + PKCE, client
credentials, roles from Keycloak's own claims, the session expiry Keycloak reports, and sign-out."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import requests

from ..test_cli import CLI, cli
from . import pages
from .conftest import ROLES_CLAIM, KeycloakStack


@pytest.fixture
def env(keycloak: KeycloakStack, isolated_home) -> dict[str, str]:
    """A terminal with the settings `stack/run env` prints for the Keycloak stack."""
    return {
        **os.environ,
        "MLFLOW_OIDC_ISSUER": keycloak.issuer,
        "MLFLOW_OIDC_CLIENT_ID": "jupyter",
        "MLFLOW_OIDC_AUDIENCE": keycloak.endpoints["audience"],
        "MLFLOW_OIDC_ROLES_CLAIM": ",".join(ROLES_CLAIM),
        "MLFLOW_TRACKING_URI": keycloak.mlflow_url,
    }


def login_interactively(env: dict[str, str], args: list[str], complete) -> tuple[int, str]:
    """Run `mlflow-oidc login ...`; hand the first URL it prints to `complete`, here in this thread (Playwright's
    sync API belongs to the thread that started it) while the CLI waits; return its exit code and stderr."""
    proc = subprocess.Popen([CLI, "login", *args], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"(http://\S+)", line)
            if found:
                complete(found.group(1))
                break
        lines.extend(proc.stderr)
        return proc.wait(timeout=120), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def in_browser(chromium, action):
    """Run `action(page)` in a fresh browser context (its own cookies: a person's own browser)."""

    def run(url: str) -> None:
        context = chromium.new_context()
        try:
            action(context.new_page(), url)
        finally:
            context.close()

    return run


def field(output: str, name: str) -> str:
    found = re.search(rf"^{name}\s+(.*)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def test_device_flow_through_keycloaks_pages_signs_in_with_realm_roles(keycloak, env, chromium):
    approve = in_browser(
        chromium, lambda page, url: pages.approve_device(page, url, "alice", keycloak.password("alice"))
    )
    code, shown = login_interactively(env, ["--device"], approve)

    assert code == 0, shown
    assert "Signed in" in shown and "as alice" in shown
    status = cli(env, "status").stdout
    assert "Admin" in field(status, "roles").split(", ")
    assert field(status, "issuer") == keycloak.issuer


def test_browser_flow_uses_a_loopback_port_with_pkce(keycloak, env, chromium):
    seen: list[str] = []

    def sign_in(page, url: str) -> None:
        seen.append(url)
        pages.log_in_at(page, url, "bob", keycloak.password("bob"))

    code, shown = login_interactively(env, ["--browser", "--no-open"], in_browser(chromium, sign_in))

    assert code == 0, shown
    assert "code_challenge_method=S256" in seen[0] and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in seen[0]
    assert "as bob" in shown and "Default" in field(cli(env, "status").stdout, "roles").split(", ")


def test_a_redirect_path_keycloak_does_not_know_fails_fast_naming_the_uri_to_register(keycloak, env):
    jupyter = keycloak.admin.client("jupyter")
    keycloak.admin.update_client("jupyter", redirectUris=["http://127.0.0.1/cli/callback"])
    try:
        began = time.monotonic()
        refused = subprocess.run(
            [CLI, "login", "--browser", "--no-open", "--timeout", "300"], env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        took = time.monotonic() - began
    finally:
        keycloak.admin.update_client("jupyter", redirectUris=jupyter["redirectUris"])

    assert refused.returncode != 0 and took < 60
    assert "http://127.0.0.1/oauth/callback" in refused.stderr and "register" in refused.stderr
    assert "MLFLOW_OIDC_REDIRECT_PATH" in refused.stderr


def test_a_configured_redirect_path_is_the_one_keycloak_redirects_to(keycloak, env, chromium):
    jupyter = keycloak.admin.client("jupyter")
    keycloak.admin.update_client("jupyter", redirectUris=["http://127.0.0.1/cli/callback"])
    seen: list[str] = []

    def sign_in(page, url: str) -> None:
        seen.append(url)
        pages.log_in_at(page, url, "bob", keycloak.password("bob"))

    try:
        code, shown = login_interactively(
            {**env, "MLFLOW_OIDC_REDIRECT_PATH": "/cli/callback"},
            ["--browser", "--no-open"],
            in_browser(chromium, sign_in),
        )
    finally:
        keycloak.admin.update_client("jupyter", redirectUris=jupyter["redirectUris"])

    assert code == 0, shown
    assert "%2Fcli%2Fcallback" in seen[0]


def test_ci_bot_signs_in_with_client_credentials_and_may_not_delete(keycloak, env):
    secret = keycloak.endpoints["clients"]["ci-bot"]["client_secret"]
    bot_env = {**env, "MLFLOW_OIDC_CLIENT_ID": "ci-bot", "MLFLOW_OIDC_CLIENT_SECRET": secret}

    login = cli(bot_env, "login", "--client-credentials")
    token = cli(bot_env, "token").stdout.strip()

    assert login.returncode == 0, login.stderr
    assert "service-account-ci-bot" in login.stderr and secret not in login.stderr + login.stdout
    headers = {"Authorization": f"Bearer {token}"}
    api = f"{keycloak.mlflow_url}/api/2.0/mlflow/experiments"
    created = requests.post(f"{api}/create", json={"name": f"ci-{time.time_ns()}"}, headers=headers, timeout=30)
    assert created.status_code == 200, created.text
    denied = requests.post(f"{api}/delete", json=created.json(), headers=headers, timeout=30)
    assert denied.status_code == 403


def test_status_shows_keycloaks_refresh_expiry_as_the_session_expiry(keycloak, env, chromium):
    approve = in_browser(chromium, lambda page, url: pages.approve_device(page, url, "bob", keycloak.password("bob")))
    code, shown = login_interactively(env, ["--device"], approve)
    assert code == 0, shown

    status = cli(env, "status").stdout
    left = int(re.search(r"in (\d+) s", field(status, "refresh token")).group(1))
    idle = keycloak.admin.realm_settings()["ssoSessionIdleTimeout"]
    # Keycloak's refresh_expires_in is the SSO idle timeout (3600 s), not the access token's 300 s.
    assert idle - 120 <= left <= idle


def test_cli_logout_ends_the_keycloak_session(keycloak, env, chromium):
    before = {s["id"] for s in keycloak.admin.sessions("alice")}
    approve = in_browser(
        chromium, lambda page, url: pages.approve_device(page, url, "alice", keycloak.password("alice"))
    )
    code, shown = login_interactively(env, ["--device"], approve)
    assert code == 0, shown
    (ours,) = {s["id"] for s in keycloak.admin.sessions("alice")} - before

    out = cli(env, "logout")

    assert out.returncode == 0, out.stderr
    assert "Signed out alice" in out.stderr
    assert ours not in {s["id"] for s in keycloak.admin.sessions("alice")}
    assert cli(env, "status").returncode == 3
