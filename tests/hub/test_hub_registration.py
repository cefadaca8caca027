"""What the local stack registers at the provider beside a hub: the hub's exact callback (its port included), and a
`jupyter` client with no browser redirect; the realm file itself stays the production one."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stack import hubstack, keycloak_idp
from stack.ports import HOST, free_port
from stack.waiting import http_status, wait_healthy

PORTS = {"proxy": 18123, "proxy-api": 18124, "hub": 18125}


def _clients(realm: dict) -> dict[str, dict]:
    return {client["clientId"]: client for client in realm["clients"]}


def test_the_realm_for_a_hub_registers_the_hubs_exact_local_callback_and_sign_out_address():
    hub = hubstack.idp_client(PORTS, "secret")

    realm = keycloak_idp.realm_for_import({}, hub)

    client = _clients(realm)["jupyterhub"]
    assert client["redirectUris"] == ["http://127.0.0.1:18123/hub/oauth_callback"]
    assert client["attributes"]["post.logout.redirect.uris"] == "http://127.0.0.1:18123/hub/login"
    assert "*" not in json.dumps(realm["clients"])


def test_the_realm_for_a_hub_leaves_the_jupyter_client_the_device_flow_only():
    realm = keycloak_idp.realm_for_import({}, hubstack.idp_client(PORTS, "secret"))

    jupyter = _clients(realm)["jupyter"]
    assert jupyter["standardFlowEnabled"] is False and jupyter["redirectUris"] == []
    assert jupyter["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert "post.logout.redirect.uris" not in jupyter["attributes"]


def test_without_a_hub_the_realm_is_the_production_file_with_its_single_user_redirects():
    realm = keycloak_idp.realm_for_import({})
    production = json.loads(keycloak_idp.REALM_FILE.read_text())

    assert _clients(realm) == _clients(production)
    assert _clients(production)["jupyterhub"]["redirectUris"] == ["https://${JUPYTER_SERVER_NAME}/hub/oauth_callback"]
    assert "http://127.0.0.1/oauth/callback" in _clients(production)["jupyter"]["redirectUris"]


def test_a_wildcard_hub_redirect_is_refused():
    realm = json.loads(keycloak_idp.REALM_FILE.read_text())
    with pytest.raises(ValueError, match="wildcard"):
        keycloak_idp.for_hub(realm, ["https://hub.example.org/user/*"], [])


@pytest.fixture
def fake_hub() -> Iterator[int]:
    """Stands in for the hub's own port (no hub needed to test the proxy's route): /hub/health answers 200."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/hub/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer((HOST, free_port()), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("routed", [True, False])
def test_the_hub_counts_as_up_only_when_the_public_proxy_port_reaches_it(fake_hub: int, tmp_path: Path, routed) -> None:
    """The stack waits on the hub through the real configurable-http-proxy's public port, as people come in."""
    hubstack.ensure_proxy_installed()
    ports = {"proxy": free_port(), "proxy-api": free_port(), "hub": fake_hub}
    argv, env = hubstack.command("proxy", tmp_path, ports, {"configproxy-auth-token": "t"}, dict(os.environ))
    if not routed:  # the proxy's default route leads nowhere, while the hub's own port still answers
        argv[argv.index("--default-target") + 1] = f"http://{HOST}:{free_port()}"
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url, expected = hubstack.health_url("proxy", ports)
        wait_healthy("proxy", url, running=lambda: proxy.poll() is None, log_path=log, timeout=30, expected=expected)
        hub_health, ok = hubstack.health_url("hub", ports)
        assert http_status(f"http://{HOST}:{fake_hub}/hub/health") == 200
        assert (http_status(hub_health) in ok) is routed
    finally:
        proxy.terminate()
        proxy.wait(timeout=15)
