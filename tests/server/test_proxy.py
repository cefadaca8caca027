"""The `/mlflow/` proxy: only the Jupyter user gets through, only with the MLflow token, never with Jupyter's."""

from __future__ import annotations

import http.client as http_client
import json
import uuid

import pytest
import requests

from ..support.tokens import user_tokens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def alice_server(start_jupyter, stack):
    """A Jupyter server whose MLflow session is alice's."""
    server = start_jupyter()
    server.sign_in(stack, "alice")
    return server


def log_after_control(stack, server) -> str:
    """nginx's access log once an authenticated request sent now shows in it: whatever came before is there too."""
    control = f"control-{uuid.uuid4().hex}"
    server.http().get(f"{server.ui_url}ajax-api/2.0/mlflow/{control}", timeout=10)
    return stack.access_log(until=control)


def test_unauthenticated_requests_never_reach_the_tracking_server(alice_server, stack):
    probe = f"probe-{uuid.uuid4().hex}"
    url = f"{alice_server.ui_url}ajax-api/2.0/mlflow/{probe}"

    anonymous_get = requests.get(url, allow_redirects=False, timeout=10)
    anonymous_post = requests.post(url, json={}, allow_redirects=False, timeout=10)
    wrong_token = requests.get(url, headers={"Authorization": "token not-the-token"}, allow_redirects=False, timeout=10)
    authenticated = alice_server.http().get(url + "-control", timeout=10)

    assert anonymous_get.status_code == 302 and "/login" in anonymous_get.headers["Location"]
    assert anonymous_post.status_code == 403
    assert wrong_token.status_code == 302
    log = stack.access_log(until=probe + "-control")
    assert probe + "-control" in log, "control: an authenticated request is visible upstream"
    assert f'/{probe}"' not in log and f"/{probe} " not in log
    assert authenticated.status_code == 404  # MLflow's own answer to an unknown endpoint


def test_signed_in_server_proxies_the_tracking_api_with_the_users_token(alice_server):
    # Filtered by name: other tests on the shared stack create experiments, and search lists the newest first.
    search = "ajax-api/2.0/mlflow/experiments/search?max_results=5&filter=name%20%3D%20%27Default%27"
    answer = alice_server.http().get(alice_server.ui_url + search)

    assert answer.status_code == 200
    assert any(e["name"] == "Default" for e in answer.json()["experiments"])


def test_mlflow_without_slash_redirects_to_the_ui(alice_server):
    answer = alice_server.http().get(alice_server.url + "mlflow", allow_redirects=False, timeout=10)

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/mlflow/"


def test_cross_origin_post_with_jupyter_credentials_is_refused_before_upstream(alice_server, stack):
    name = f"evil-{uuid.uuid4().hex}"
    creates_before = log_after_control(stack, alice_server).count("POST /ajax-api/2.0/mlflow/experiments/create")

    refused = alice_server.http().post(
        f"{alice_server.ui_url}ajax-api/2.0/mlflow/experiments/create",
        json={"name": name},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        timeout=10,
    )

    assert refused.status_code == 403
    assert (
        log_after_control(stack, alice_server).count("POST /ajax-api/2.0/mlflow/experiments/create") == creates_before
    )
    admin = user_tokens(stack, "alice")["access_token"]
    lookup = requests.get(f"{stack.mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": name}, headers={"Authorization": f"Bearer {admin}"},
                          timeout=10)  # fmt: skip
    assert lookup.status_code == 404


def test_ui_new_tab_links_point_under_the_prefix(alice_server):
    page = alice_server.http().get(alice_server.ui_url, timeout=10)
    bundle = page.text.split('src="')[1].split('"')[0]

    script = alice_server.http().get(alice_server.ui_url + bundle, timeout=30).text

    assert "`/#" not in script
    assert "`./#" in script


def test_signed_out_server_answers_with_a_sign_in_page_or_json(jupyter):
    http = jupyter.http()

    page = http.get(jupyter.ui_url, headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}, timeout=10)
    api = http.get(jupyter.ui_url + "ajax-api/2.0/mlflow/experiments/search", timeout=10)

    assert page.status_code == 401
    assert "Sign in" in page.text and "/mlflow/oauth/login?next=%2Fmlflow%2F" in page.text
    # Answered before the body was read, the server closes the connection: it must say so, or a client
    # reusing the connection for its next request gets "connection reset".
    assert page.headers["Connection"] == "close"
    assert api.status_code == 401
    assert api.json()["error_code"] == "UNAUTHENTICATED"


@pytest.fixture(scope="module")
def recorded_server(start_jupyter, alice_server, recording_upstream):
    """A server in front of a recording stand-in tracking server (the real stack cannot show what reaches it);
    it shares alice's token cache, so it is signed in as alice."""
    return start_jupyter(upstream_url=recording_upstream.url, home=alice_server.home)


def test_jupyter_credentials_and_browser_provenance_stay_behind(recorded_server, recording_upstream):
    http = recorded_server.http()
    http.cookies.set("_xsrf", "xsrf-cookie-value")
    xsrf = "xsrf-cookie-value"

    answer = http.post(
        f"{recorded_server.ui_url}ajax-api/2.0/mlflow/runs/create?token={recorded_server.token}&a=1&_xsrf={xsrf}",
        json={"experiment_id": "0"},
        headers={"Referer": recorded_server.ui_url, "Origin": recorded_server.origin, "X-XSRFToken": xsrf,
                 "Cookie": f"_xsrf={xsrf}; username-x=secret"},
        timeout=10,
    )  # fmt: skip

    assert answer.status_code == 200
    assert "upstream-session" not in answer.headers.get("Set-Cookie", "")
    seen = recording_upstream.requests[-1]
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/ajax-api/2.0/mlflow/runs/create?a=1"
    assert headers["host"] == recording_upstream.url.removeprefix("http://")
    assert headers["authorization"].startswith("Bearer ey")
    assert recorded_server.token not in str(seen)
    for name in ("cookie", "origin", "referer", "x-xsrftoken"):
        assert name not in headers
    assert seen["body"] == b'{"experiment_id": "0"}'


def test_forwarding_headers_are_the_proxys_own_and_dot_segments_never_reach_upstream(
    recorded_server, recording_upstream
):
    http = recorded_server.http()
    claims = {"X-Forwarded-Prefix": "/evil", "X-Forwarded-Port": "1", "X-Real-IP": "10.0.0.2",
              "X-Forwarded-Host": "evil.example", "Forwarded": "for=10.0.0.3"}  # fmt: skip
    assert http.get(f"{recorded_server.ui_url}ajax-api/2.0/mlflow/runs/get", headers=claims, timeout=10).ok
    headers = {k.lower(): v for k, v in recording_upstream.requests[-1]["headers"].items()}
    assert headers["x-forwarded-prefix"] == recorded_server.base_url + "mlflow"
    assert headers["x-forwarded-host"] == recorded_server.origin.split("://", 1)[1]
    assert headers["x-forwarded-for"] == "127.0.0.1"
    for name in ("x-forwarded-port", "x-real-ip", "forwarded"):
        assert name not in headers

    before = len(recording_upstream.requests)
    for path in ("ajax-api/../../admin", "%2e%2e/%2e%2e/admin", "a/%252e%252e/b"):
        # Sent byte for byte: requests would resolve the dots itself.
        conn = http_client.HTTPConnection(recorded_server.origin.split("://", 1)[1], timeout=10)
        conn.request(
            "GET",
            f"{recorded_server.base_url}mlflow/{path}",
            headers={"Authorization": f"token {recorded_server.token}"},
        )
        answer = conn.getresponse()
        assert (answer.status, json.loads(answer.read())["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), path
        conn.close()
    assert len(recording_upstream.requests) == before


def test_redirects_from_upstream_stay_under_the_prefix(recorded_server):
    answer = recorded_server.http().get(recorded_server.ui_url + "redirect", allow_redirects=False, timeout=10)

    assert answer.status_code == 302
    assert answer.headers["Location"] == "/mlflow/landed?x=1"


@pytest.mark.parametrize(
    ("status", "title"),
    [(401, "MLflow did not accept your sign-in"), (403, "MLflow refused access"), (503, "MLflow is not available")],
)
def test_upstream_errors_become_readable_pages_for_people_and_stay_json_for_the_ui(recorded_server, status, title):
    http = recorded_server.http()
    url = f"{recorded_server.ui_url}status/{status}"

    page = http.get(url, headers={"Sec-Fetch-Mode": "navigate", "Accept": "text/html"}, timeout=10)
    api = http.get(url, headers={"Sec-Fetch-Mode": "cors"}, timeout=10)

    assert page.status_code == status and title in page.text and f"upstream said {status}" in page.text
    assert api.status_code == status and api.json()["message"] == f"upstream said {status}"


def test_unreachable_tracking_server_gets_a_page(start_jupyter, alice_server):
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = start_jupyter(upstream_url=closed, home=alice_server.home)

    page = server.http().get(server.ui_url, headers={"Sec-Fetch-Mode": "navigate"}, timeout=20)

    assert page.status_code == 502
    assert "MLflow cannot be reached" in page.text


@pytest.fixture
def evil_site():
    """A page on another site (localhost is another site than 127.0.0.1) that auto-submits a form to `target`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    pages: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = pages.get(self.path, b"")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()

    def publish(target: str, json_field: str) -> str:
        name, value = json_field.split("=", 1)
        pages["/attack"] = (
            f"<form method='post' enctype='text/plain' action='{target}'>"
            f"<input name='{name}' value='{value}'></form><script>document.forms[0].submit()</script>"
        ).encode()
        return f"http://localhost:{server.server_address[1]}/attack"

    yield publish
    server.shutdown()
    server.server_close()


@pytest.mark.browser
def test_cross_site_form_post_from_a_browser_never_reaches_the_tracking_server(alice_server, stack, chromium,
                                                                               evil_site):  # fmt: skip
    name = f"evil-{uuid.uuid4().hex}"
    context = chromium.new_context()
    page = context.new_page()
    page.goto(f"{alice_server.url}api/status?token={alice_server.token}")  # the victim's fresh Jupyter cookie
    creates_before = log_after_control(stack, alice_server).count("POST /ajax-api/2.0/mlflow/experiments/create")
    attack = evil_site(
        f"{alice_server.ui_url}ajax-api/2.0/mlflow/experiments/create", f'{{"name": "{name}", "x": "="}}'
    )

    with page.expect_response(lambda r: "experiments/create" in r.url) as answered:
        page.goto(attack)

    assert answered.value.status in (403, 404)
    context.close()
    assert (
        log_after_control(stack, alice_server).count("POST /ajax-api/2.0/mlflow/experiments/create") == creates_before
    )
    search = alice_server.http().get(f"{alice_server.ui_url}ajax-api/2.0/mlflow/experiments/get-by-name",
                                     params={"experiment_name": name}, timeout=10)  # fmt: skip
    assert search.status_code == 404


def make_ca_and_server_cert(folder):
    """A private CA and a certificate for 127.0.0.1 signed by it (PEM files): an HTTPS tracking server's setup."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))  # fmt: skip
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )  # fmt: skip
    )
    return folder / "ca.pem", folder / "server.pem"


def test_https_tracking_server_with_a_private_ca(start_jupyter, alice_server, recording_upstream, tmp_path):
    import ssl
    from http.server import ThreadingHTTPServer
    from threading import Thread

    ca, server_pem = make_ca_and_server_cert(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(server_pem)
    https = ThreadingHTTPServer(("127.0.0.1", 0), recording_upstream.handler)
    https.socket = tls.wrap_socket(https.socket, server_side=True)
    Thread(target=https.serve_forever, daemon=True).start()
    upstream = f"https://127.0.0.1:{https.server_address[1]}"
    try:
        trusting = start_jupyter(upstream_url=upstream, home=alice_server.home, args=(f"--MLflowOIDC.ca_bundle={ca}",))
        distrusting = start_jupyter(upstream_url=upstream, home=alice_server.home)

        trusted = trusting.http().get(trusting.ui_url + "ajax-api/2.0/mlflow/experiments/search", timeout=20)
        refused = distrusting.http().get(distrusting.ui_url + "ajax-api/2.0/mlflow/experiments/search", timeout=20)
    finally:
        https.shutdown()
        https.server_close()

    assert trusted.status_code == 200 and trusted.json() == {"ok": True}
    assert refused.status_code == 502 and "SSL" in refused.json()["message"]
