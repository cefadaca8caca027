"""`%mlflow_login`, `%mlflow_whoami` and `%mlflow_logout` in a real IPython shell against Keycloak."""

from __future__ import annotations

import contextlib
import re
import threading

import pytest

from ..support.shells import extension_shell
from . import http_pages
from .conftest import ROLES_CLAIM, KeycloakStack

DEVICE_LINK = re.compile(r"open (http://\S+/device\S*)")


class Terminal:
    """sys.stdout as the user reads it; approves a device sign-in it sees on Keycloak's pages as `user`."""

    def __init__(self, keycloak: KeycloakStack, user: str) -> None:
        self.keycloak, self.user, self.text = keycloak, user, ""
        self.approvals: list[threading.Thread] = []

    def write(self, data: str) -> int:
        self.text += data
        found = DEVICE_LINK.search(data)
        if found:
            args = (found.group(1), self.user, self.keycloak.password(self.user))
            thread = threading.Thread(target=http_pages.approve_device, args=args, daemon=True)
            thread.start()
            self.approvals.append(thread)
        return len(data)

    def flush(self) -> None:
        pass

    def run(self, shell, magic: str, line: str = "") -> None:
        with contextlib.redirect_stdout(self):
            shell.run_line_magic(magic, line)


@pytest.fixture
def shell(keycloak, isolated_home, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", keycloak.mlflow_url)
    monkeypatch.setenv("MLFLOW_OIDC_ISSUER", keycloak.issuer)
    monkeypatch.setenv("MLFLOW_OIDC_CLIENT_ID", "jupyter")
    monkeypatch.setenv("MLFLOW_OIDC_AUDIENCE", keycloak.endpoints["audience"])
    monkeypatch.setenv("MLFLOW_OIDC_ROLES_CLAIM", ",".join(ROLES_CLAIM))
    with extension_shell() as ip:
        yield ip


def test_whoami_shows_keycloak_roles_and_its_session_expiry(shell, keycloak):
    terminal = Terminal(keycloak, "alice")
    terminal.run(shell, "mlflow_login", "--flow device --text")
    terminal.text = ""

    terminal.run(shell, "mlflow_whoami")

    assert re.search(r"Roles:\s+.*Admin", terminal.text), terminal.text
    # Keycloak's refresh_expires_in (the SSO idle timeout, 1 h), not the 5-minute access token.
    assert re.search(r"Session expires in:\s+(59|60) min", terminal.text), terminal.text


def test_logout_magic_ends_the_keycloak_session(shell, keycloak):
    before = {s["id"] for s in keycloak.admin.sessions("bob")}
    terminal = Terminal(keycloak, "bob")
    terminal.run(shell, "mlflow_login", "--flow device --text")
    (ours,) = {s["id"] for s in keycloak.admin.sessions("bob")} - before

    terminal.run(shell, "mlflow_logout")

    assert ours not in {s["id"] for s in keycloak.admin.sessions("bob")}
