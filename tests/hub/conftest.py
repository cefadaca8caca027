"""Fixtures: the local stack with JupyterHub (CHP, local spawner) and people signed in at the hub through Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

#: Access tokens live 5 s: every minute of work needs a dozen refreshes, all by the hub.
ACCESS_TOKEN_TTL = "5"


@pytest.fixture(scope="session")
def hub_stack(make_stack):
    """IdP, MLflow, gate, nginx, configurable-http-proxy and JupyterHub, on free loopback ports."""
    return make_stack(env={"IDP_ACCESS_TOKEN_TTL": ACCESS_TOKEN_TTL}, name="hub-stack", jupyterhub=True)


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.1)


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
        """Their single-user server, ending in `/` (what tests/server/kernels.py calls `server.url`)."""
        return f"{self.hub}/user/{self.name}/"

    @property
    def ui_url(self) -> str:
        return self.url + "mlflow/"

    def http(self) -> requests.Session:
        """A client with the user's own JupyterHub API token (as a script of theirs would have)."""
        session = requests.Session()
        session.headers["Authorization"] = f"token {self.token}"
        return session


def hub_url(hub_stack: Any) -> str:
    return hub_stack.endpoints["jupyterhub_url"].rstrip("/")


def start_sign_in(context: Any, hub_stack: Any, name: str) -> Any:
    """At the hub's login page, "Sign in", then the IdP's login page; the hub goes on to start the server."""
    page = context.new_page()
    page.goto(hub_url(hub_stack) + "/hub/login")
    page.click("a[href*='oauth_login']")  # "Sign in with …": the hub sends the browser to the provider
    page.fill("#username", name)
    page.fill("#password", hub_stack.password(name))
    page.click("button[type=submit]")
    return page


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


@pytest.fixture(scope="session")
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
    page.wait_for_url(lambda url: url.startswith(f"{user.hub}/hub/home") or "/interaction/" in url, timeout=60_000)
    if "/interaction/" in page.url:
        page.fill("#username", user.name)
        page.fill("#password", hub_stack.password(user.name))
        page.click("button[type=submit]")
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
