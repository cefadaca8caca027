"""Sessions of the package under test, signed in against the local stack through the IdP's own pages."""

from __future__ import annotations

import threading
from pathlib import Path

import requests

from mlflow_oidc_jupyter.oidc import Session
from mlflow_oidc_jupyter.settings import Settings

from .idp_pages import approve_device, authorize


def settings_for(stack, cache_dir: Path, client: str = "jupyter", **overrides) -> Settings:
    """Settings for `client` of the stack's IdP with a cache of the test's own."""
    secret = stack.endpoints["clients"][client].get("client_secret")
    return Settings(
        issuer=stack.issuer,
        client_id=stack.endpoints["clients"][client]["client_id"],
        client_secret=secret,
        tracking_uri=stack.mlflow_url,
        audience=stack.endpoints.get("audience"),
        cache_dir=Path(cache_dir),
        **overrides,
    )


def browser_sign_in(session: Session, stack, username: str) -> None:
    """Auth code + PKCE through the session's loopback redirect; the 'browser' is the IdP page helper."""

    def follow(url: str, opened: bool) -> None:
        requests.get(authorize(url, username, stack.password(username)), timeout=10)

    session.login_browser(on_url=follow, open_browser=False, timeout=30)


def device_sign_in(session: Session, stack, username: str) -> list:
    """Device flow, approved on the IdP's pages as `username`; returns what the prompt was shown."""
    shown: list = []

    def approve(device) -> None:
        shown.append(device)
        threading.Thread(
            target=approve_device, args=(device.verification_uri_complete, username, stack.password(username))
        ).start()

    session.login_device(approve)
    return shown
