"""Fixtures: the local stack with JupyterHub (CHP, local spawner) and people signed in at the hub through Chromium.

A test module runs against the local IdP, and also against Keycloak when it says so (`PROVIDERS = ("local",
"keycloak")`). Each provider's hub stack lives for this package only: the Keycloak one (one Keycloak start for all
its tests) is stopped before tests/keycloak starts the session's. It cannot be that one (tests/support/keycloak.py):
the realm beside a hub differs on purpose (the public `jupyter` client has no browser redirect, docs/jupyterhub.md),
and the single-user tiers test exactly those redirects.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from stack.localstack import LocalStack

from ..conftest import Stack
from ..keycloak.pages import log_in as keycloak_log_in
from ..support.clients import token_client
from ..support.keycloak import FIRST_START_TIMEOUT, KeycloakStack
from ..support.waiting import wait_until

#: Access tokens live 5 s: every minute of work needs a dozen refreshes, all by the hub.
ACCESS_TOKEN_TTL = {"local": "5", "keycloak": "5"}  # the bar on both providers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hub_stack" in metafunc.fixturenames:
        providers = getattr(metafunc.module, "PROVIDERS", ("local",))
        metafunc.parametrize("hub_provider", providers, indirect=True, scope="package")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The first Keycloak test also waits for Keycloak's first start (a JVM, a fresh schema): minutes under load.
    for item in items:
        if getattr(item, "callspec", None) and item.callspec.params.get("hub_provider") == "keycloak":
            item.add_marker(pytest.mark.timeout(FIRST_START_TIMEOUT))


@pytest.fixture(scope="package")
def hub_provider(request: pytest.FixtureRequest) -> str:
    """Which identity provider the hub signs people in at: "local" (stack/idp) or "keycloak"."""
    return request.param


@pytest.fixture(scope="package")
def hub_stack(hub_provider: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """IdP, MLflow, gate, nginx, configurable-http-proxy and JupyterHub, on free loopback ports.

    HUB_KEYCLOAK_TEST_RUN_DIR names a stack already started with `stack/run up --jupyterhub --idp keycloak` to reuse
    (left running) while working on these tests; its access tokens are set to this tier's lifespan.
    """
    reuse = os.environ.get("HUB_KEYCLOAK_TEST_RUN_DIR")
    if reuse and hub_provider == "keycloak":
        kept = LocalStack(Path(reuse), log=lambda _m: None)
        kc = KeycloakStack(kept, kept.endpoints())
        kc.admin.update_realm(accessTokenLifespan=int(ACCESS_TOKEN_TTL["keycloak"]))
        record_refreshes(kc)
        yield kc
        return
    env = {"IDP_ACCESS_TOKEN_TTL": ACCESS_TOKEN_TTL[hub_provider]}
    if hub_provider == "keycloak":
        env["STACK_GATE_LEEWAY"] = "0"  # as tests/keycloak: an expired token is refused at once
    local = LocalStack(tmp_path_factory.mktemp(f"hub-{hub_provider}"), env=env, log=lambda _m: None)
    try:
        endpoints = local.up(free_ports=True, jupyterhub=True, idp=hub_provider)
        if hub_provider == "keycloak":
            kc = KeycloakStack(local, endpoints)
            record_refreshes(kc)
            yield kc
        else:
            yield Stack(local, endpoints)
    finally:
        local.down()


def record_refreshes(keycloak: KeycloakStack) -> None:
    """Keycloak stores sign-ins and errors by default, refreshes only when asked: the tests count them."""
    admin = keycloak.admin
    config = admin.get("/events/config")
    wanted = {"LOGIN", "LOGIN_ERROR", "CODE_TO_TOKEN", "CODE_TO_TOKEN_ERROR", "LOGOUT", "LOGOUT_ERROR",
              "REFRESH_TOKEN", "REFRESH_TOKEN_ERROR", "REVOKE_GRANT"}  # fmt: skip
    types = sorted(set(config.get("enabledEventTypes") or ()) | wanted)
    admin.request("PUT", "/events/config", json={**config, "eventsEnabled": True, "enabledEventTypes": types})


def is_keycloak(hub_stack: Any) -> bool:
    return hub_stack.endpoints.get("idp") == "keycloak"


class ProviderRecord:
    """What the provider recorded, as the tests ask it: the local IdP's log lines, or Keycloak's stored events."""

    def __init__(self, hub_stack: Any) -> None:
        self.stack = hub_stack
        self.start = self._now()

    def _now(self) -> float:
        if is_keycloak(self.stack):
            return time.time() * 1000 - 1000  # Keycloak's event times are epoch milliseconds (its clock is ours)
        return len(self.stack.log("idp").splitlines())

    def _events(self, kind: str) -> list[dict]:
        events = self.stack.admin.get("/events", type=kind, max=10000)
        return [event for event in events if event["time"] >= self.start]

    def _lines(self, *needles: str) -> list[str]:
        during = self.stack.log("idp").splitlines()[int(self.start) :]
        return [line for line in during if all(n in line for n in needles)]

    def refresh_clients(self) -> list[str]:
        """The client of every refresh grant the provider answered since this record began."""
        if is_keycloak(self.stack):
            return [event["clientId"] for event in self._events("REFRESH_TOKEN")]
        lines = self._lines("token issued", "grant_type=refresh_token")
        return [line.split("client=")[1].split()[0] for line in lines]

    def refused_refreshes(self) -> int:
        if is_keycloak(self.stack):
            return len(self._events("REFRESH_TOKEN_ERROR"))
        return len(self._lines("token refused"))

    def refused_authorizations(self, client_id: str) -> int:
        """Authorization requests of `client_id` the provider refused (and answered on its own page)."""
        if is_keycloak(self.stack):
            return len([e for e in self._events("LOGIN_ERROR") if e.get("clientId") == client_id])
        return len(self._lines("authorization refused", f"client={client_id}"))

    def codes_exchanged(self, client_id: str) -> int:
        """Authorization codes of `client_id` turned into tokens since this record began."""
        if is_keycloak(self.stack):
            return len([e for e in self._events("CODE_TO_TOKEN") if e.get("clientId") == client_id])
        return len(self._lines("token issued", f"client={client_id}", "grant_type=authorization_code"))

    def logouts(self, client_id: str) -> int:
        if is_keycloak(self.stack):
            return len([e for e in self._events("LOGOUT") if e.get("clientId") in (client_id, None)])
        return len(self._lines("logout", f"client={client_id}"))


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    """`wait_until` with the hub's longer default timeout (hub, single-user server and provider all take part)."""
    return wait_until(condition, timeout, what)


@dataclass
class HubUser:
    """Someone signed in at the hub in a browser of their own, with their server running."""

    name: str
    hub: str
    context: Any = field(repr=False)
    page: Any = field(repr=False)
    token: str = field(repr=False)

    @property
    def url(self) -> str:
        """Their single-user server, ending in `/` (what tests/support/kernels.py calls `server.url`)."""
        return f"{self.hub}/user/{self.name}/"

    @property
    def ui_url(self) -> str:
        return self.url + "mlflow/"

    def http(self) -> requests.Session:
        """A client with the user's own JupyterHub API token (as a script of theirs would have)."""
        return token_client(self.token)


def hub_url(hub_stack: Any) -> str:
    return hub_stack.endpoints["jupyterhub_url"].rstrip("/")


def start_sign_in(context: Any, hub_stack: Any, name: str) -> Any:
    """At the hub's login page, "Sign in", then the IdP's login page; the hub goes on to start the server."""
    page = context.new_page()
    page.goto(hub_url(hub_stack) + "/hub/login")
    page.click("a[href*='oauth_login']")  # "Sign in with …": the hub sends the browser to the provider
    log_in_at_provider(page, hub_stack, name)
    return page


def log_in_at_provider(page: Any, hub_stack: Any, name: str) -> None:
    """The provider's own login form: stack/idp's page or Keycloak's."""
    if is_keycloak(hub_stack):
        keycloak_log_in(page, name, hub_stack.password(name))
        return
    page.fill("#username", name)
    page.fill("#password", hub_stack.password(name))
    page.click("button[type=submit]")


def sign_in_at_provider(user: HubUser, hub_stack: Any) -> None:
    """Make sure the user's browser holds a session at the provider itself (what an attacker's link relies on).

    The local IdP keeps the hub sign-in's session. Keycloak keeps none after a sign-in that asked for
    `offline_access` (the hub's: only the offline session stays), so the user signs in to Keycloak's account
    console, as people do to change their password.
    """
    if not is_keycloak(hub_stack):
        return
    page = user.context.new_page()
    try:
        page.goto(hub_stack.issuer + "/account/")
        # Keycloak's login form (its #kc-login button), or the console (which has a #username field of its own).
        page.locator("#kc-login").or_(page.get_by_text("Personal info")).first.wait_for(timeout=60_000)
        if page.locator("#kc-login").count():
            keycloak_log_in(page, user.name, hub_stack.password(user.name))
            page.get_by_text("Personal info").first.wait_for(timeout=60_000)
    finally:
        page.close()


def finish_sign_in(page: Any, hub_stack: Any, name: str) -> HubUser:
    """Wait until the hub has started the user's server and sent the browser on to JupyterLab."""
    hub = hub_url(hub_stack)
    page.wait_for_url(f"{hub}/user/{name}/lab**", timeout=180_000)
    return HubUser(name=name, hub=hub, context=page.context, page=page, token=api_token(page.context, hub, name))


def api_token(context: Any, hub: str, name: str) -> str:
    """A JupyterHub API token of the user's, made in their browser session (cookie + XSRF), as the token page does."""
    xsrf = next(c["value"] for c in context.cookies(hub + "/hub/") if c["name"] == "_xsrf")
    answer = context.request.post(
        f"{hub}/hub/api/users/{name}/tokens",
        data=json.dumps({"note": "tests", "expires_in": 3600}),
        headers={"X-XSRFToken": xsrf, "Content-Type": "application/json"},
    )
    assert answer.status == 201, answer.text()
    return answer.json()["token"]


@pytest.fixture(scope="package")
def hub_users(hub_stack, chromium) -> Iterator[dict[str, HubUser]]:
    """alice and bob, each signed in at the hub in a browser context of their own."""
    contexts = []
    try:
        pages = {}
        for name in ("alice", "bob"):  # both servers start at once
            context = chromium.new_context(viewport={"width": 1400, "height": 900})
            contexts.append(context)
            pages[name] = start_sign_in(context, hub_stack, name)
        yield {name: finish_sign_in(page, hub_stack, name) for name, page in pages.items()}
    finally:
        for context in contexts:
            context.close()


def sign_in_again(user: HubUser, hub_stack: Any) -> None:
    """The hub login page's "Sign in" again: to the IdP (which asks for the password only without a session)."""
    page = user.page
    page.goto(f"{user.hub}/hub/oauth_login?next=/hub/home")
    # Redirects are never where the page stops: it shows the hub's home, or the provider's login page.
    page.wait_for_url(
        lambda url: url.startswith((f"{user.hub}/hub/home", hub_stack.issuer.rstrip("/") + "/")), timeout=60_000
    )
    if not page.url.startswith(f"{user.hub}/hub/home"):
        log_in_at_provider(page, hub_stack, user.name)
    page.wait_for_url(f"{user.hub}/hub/home**", timeout=60_000)


def idp_log_lines(hub_stack: Any, *needles: str) -> list[str]:
    return [line for line in hub_stack.log("idp").splitlines() if all(n in line for n in needles)]


def forget_refresh_tokens(run_dir: Path, client_id: str, subject: str) -> int:
    """What an IdP administrator revoking a user's sessions does: the stored refresh tokens of one grant go.

    Call while the IdP is stopped (its store is the file `idp-state.json`, see stack/idp/store.mjs).
    """
    path = run_dir / "idp-state.json"
    entries = json.loads(path.read_text())
    kept = [
        (key, entry)
        for key, entry in entries
        if not (
            key.startswith("RefreshToken:")
            and entry["payload"].get("clientId") == client_id
            and entry["payload"].get("accountId") == subject
        )
    ]
    path.write_text(json.dumps(kept))
    return len(entries) - len(kept)
