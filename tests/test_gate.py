"""The authorization gate and the nginx identity-aware proxy: real gate, real nginx, a real issuer of our own.

The issuer here is a tiny JWKS/discovery server with RSA keys made by joserfc (tokens signed for real), so that
expiry, foreign keys, rotation and Keycloak-shaped claims can be produced at will; the local IdP's own tokens
are exercised by the stack tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from joserfc import jwt
from joserfc.jwk import RSAKey

from stack.nginx.render import render_local
from stack.ports import free_port

from .support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / "stack" / "gate" / "gate.py"
POLICY = ROOT / "stack" / "gate" / "policy.yaml"
NGINX = "/usr/sbin/nginx"

pytestmark = [pytest.mark.stack, pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx not installed")]


# --------------------------------------------------------------------------------------------------------------
# Real components: an issuer of our own, an echo upstream, the gate, nginx
# --------------------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_key(kid: str) -> Any:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@dataclass
class Issuer:
    """Discovery + JWKS server on loopback; serves issuers at its root and under /realms/<name> (Keycloak-like)."""

    server: ThreadingHTTPServer
    keys: list[Any] = field(default_factory=list)
    jwks_fetches: int = 0
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def token(self, key: Any = None, *, header: dict | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": self.url, "aud": "mlflow", "sub": "user-1", "iat": now, "exp": now + 300} | claims
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"alg": "RS256", "kid": key.kid} | (header or {})
        return jwt.encode(hdr, payload, key)

    def user_token(self, name: str, roles: list[str], **claims: Any) -> str:
        return self.token(preferred_username=name, roles=roles, **claims)


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    yield from serve_issuer()


def serve_issuer(tls: ssl.SSLContext | None = None) -> Iterator[Issuer]:
    state: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            iss = state["issuer"]
            if self.path.endswith("/.well-known/openid-configuration"):
                base = iss.url + self.path.removesuffix("/.well-known/openid-configuration")
                body = {"issuer": base, "jwks_uri": iss.url + "/jwks"}
            elif self.path == "/jwks":
                iss.jwks_fetches += 1
                body = {"keys": [k.as_dict(private=False) | {"use": "sig", "alg": "RS256"} for k in iss.keys]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    state["issuer"] = Issuer(server, [new_key("key-1")], scheme="https" if tls else "http")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state["issuer"]
    finally:
        server.shutdown()


@dataclass
class Upstream:
    """Stands in for MLflow: answers with what it received (method, path, headers, body length and digest)."""

    server: ThreadingHTTPServer
    requests: list[dict] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"


DOWNLOAD_SIZE = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    state: dict[str, Upstream] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm the body waits for the peer's delayed ACK
        # (40 ms) on every request of a kept-alive connection from nginx.
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            digest, size = hashlib.sha256(), 0
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while chunk_size := int(self.rfile.readline().split(b";")[0], 16):
                    while chunk_size:
                        chunk = self.rfile.read(min(chunk_size, 1 << 20))
                        digest.update(chunk)
                        size += len(chunk)
                        chunk_size -= len(chunk)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                remaining = int(self.headers.get("Content-Length") or 0)
                while remaining:
                    chunk = self.rfile.read(min(remaining, 1 << 20))
                    digest.update(chunk)
                    size += len(chunk)
                    remaining -= len(chunk)
            seen = {"method": self.command, "path": self.path, "headers": dict(self.headers.items())}
            state["upstream"].requests.append(seen | {"size": size, "sha256": digest.hexdigest()})
            if self.path == "/download":
                self.send_response(200)
                self.send_header("Content-Length", str(DOWNLOAD_SIZE))
                self.end_headers()
                block = b"x" * (1 << 20)
                for _ in range(DOWNLOAD_SIZE // len(block)):
                    self.wfile.write(block)
                return
            data = json.dumps(seen | {"size": size, "sha256": digest.hexdigest()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle  # noqa: N815

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["upstream"] = Upstream(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state["upstream"]
    finally:
        server.shutdown()


def wait_http(url: str, ok: set[int], proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=1).status_code in ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Gate:
    url: str
    address: str
    log: Path

    def check(self, token: str | None, method: str = "GET", uri: str = "/api/2.0/mlflow/experiments/search"):
        headers = {"X-Original-Method": method, "X-Original-URI": uri}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.get(f"{self.url}/check", headers=headers, timeout=5)


def start_gate(tmp: Path, issuer_url: str, policy: Path = POLICY, *extra: str) -> tuple[Gate, subprocess.Popen]:
    port = free_port()
    log = tmp / f"gate-{port}.log"
    cmd = [sys.executable, str(GATE), "--host", "127.0.0.1", "--port", str(port), "--issuer", issuer_url]
    cmd += ["--audience", "mlflow", "--policy", str(policy), "--leeway", "5", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", {200}, proc, log)
    except BaseException:
        stop(proc)
        raise
    return Gate(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", log), proc


@pytest.fixture(scope="module")
def gate(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    g, proc = start_gate(tmp_path_factory.mktemp("gate"), issuer.url)
    try:
        yield g
    finally:
        stop(proc)


@dataclass
class Proxy:
    url: str
    run_dir: Path

    @property
    def access_log(self) -> str:
        return (self.run_dir / "nginx" / "access.log").read_text()

    def raw(self, method: str, path: str, token: str | None = None, body: bytes = b"", **headers: str):
        """A request with the path sent byte for byte (no client-side normalization)."""
        conn = http.client.HTTPConnection(self.url.removeprefix("http://"), timeout=30)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body or method in ("POST", "PUT", "PATCH"):
            headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response, data


def start_nginx(
    tmp: Path, mlflow_upstream: str, gate_upstream: str, workers: int = 1
) -> tuple[Proxy, subprocess.Popen]:
    """The stack's nginx; with several workers, each new connection goes to one of them by its address (reuseport)."""
    port = free_port()
    listen = f"127.0.0.1:{port}" + (" reuseport" if workers > 1 else "")
    conf = render_local(tmp, listen=listen, mlflow_upstream=mlflow_upstream, gate_upstream=gate_upstream)
    conf.write_text(conf.read_text().replace("worker_processes 1;", f"worker_processes {workers};"))
    log = tmp / "nginx" / "stderr.log"
    with log.open("wb") as out:
        cmd = [NGINX, "-p", str(tmp / "nginx"), "-c", str(conf), "-g", "daemon off;"]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", {401, 503}, proc, log)
    except BaseException:
        stop(proc, signal.SIGQUIT)
        raise
    return Proxy(f"http://127.0.0.1:{port}", tmp), proc


@pytest.fixture(scope="module")
def proxy(gate: Gate, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    p, proc = start_nginx(tmp_path_factory.mktemp("nginx"), upstream.address, gate.address)
    try:
        yield p
    finally:
        stop(proc, signal.SIGQUIT)


@pytest.fixture(scope="module")
def bob(issuer: Issuer) -> str:
    return issuer.user_token("bob", ["Default"])


@pytest.fixture(scope="module")
def alice(issuer: Issuer) -> str:
    return issuer.user_token("alice", ["Admin"])


def assert_unauthenticated(proxy: Proxy, token: str | None, message: str) -> None:
    response, data = proxy.raw("GET", "/api/2.0/mlflow/experiments/search", token)
    assert response.status == 401
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("WWW-Authenticate") == 'Bearer realm="mlflow", error="invalid_token"'
    assert json.loads(data) == {"error_code": "UNAUTHENTICATED", "message": message}


# --------------------------------------------------------------------------------------------------------------
# Authentication: anything but a valid token of our issuer for our audience is 401
# --------------------------------------------------------------------------------------------------------------


def test_request_without_token_is_401_with_mlflow_json_and_bearer_challenge(proxy: Proxy) -> None:
    assert_unauthenticated(proxy, None, "missing bearer token")


def test_basic_auth_is_not_a_bearer_token(proxy: Proxy) -> None:
    response, data = proxy.raw("GET", "/", Authorization="Basic YWxpY2U6c2VjcmV0")
    assert response.status == 401
    assert json.loads(data)["message"] == "missing bearer token"


def test_token_signed_by_another_key_with_the_same_kid_is_401(proxy: Proxy, issuer: Issuer) -> None:
    forged = issuer.token(new_key("key-1"), preferred_username="mallory", roles=["Admin"])
    assert_unauthenticated(proxy, forged, "invalid signature")


def test_expired_token_is_401(proxy: Proxy, issuer: Issuer) -> None:
    expired = issuer.token(exp=int(time.time()) - 60, roles=["Admin"])
    assert_unauthenticated(proxy, expired, "token expired")


def test_token_for_another_audience_is_401(proxy: Proxy, issuer: Issuer) -> None:
    assert_unauthenticated(proxy, issuer.token(aud="account", roles=["Admin"]), "wrong audience")


def test_token_of_another_issuer_is_401(proxy: Proxy, issuer: Issuer) -> None:
    assert_unauthenticated(proxy, issuer.token(iss="https://evil.example", roles=["Admin"]), "wrong issuer")


def test_token_without_exp_is_401(proxy: Proxy, issuer: Issuer) -> None:
    assert_unauthenticated(proxy, issuer.token(exp=None, roles=["Admin"]), "missing claim exp")


def test_token_not_yet_valid_is_401(proxy: Proxy, issuer: Issuer) -> None:
    assert_unauthenticated(proxy, issuer.token(nbf=int(time.time()) + 600, roles=["Admin"]), "token not yet valid")


def test_unsigned_alg_none_token_is_401(proxy: Proxy, issuer: Issuer) -> None:
    # joserfc refuses to produce such a token, so the attacker's bytes are assembled here.
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "mlflow", "exp": now + 300, "roles": ["Admin"], "sub": "x"}
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(claims).encode())}."
    assert_unauthenticated(proxy, token, "algorithm not allowed")


def test_hs256_token_keyed_with_the_public_key_is_401(proxy: Proxy, issuer: Issuer) -> None:
    # Key confusion: HMAC keyed with the issuer's public key, which anyone can fetch from the JWKS.
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": "mlflow", "exp": now + 300, "roles": ["Admin"], "sub": "x"}
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.keys[0].kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    public_pem = issuer.keys[0].as_pem(private=False)
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert_unauthenticated(proxy, f"{signing_input}.{_b64(signature)}", "algorithm not allowed")


def test_garbage_token_is_401_and_the_message_never_echoes_it(proxy: Proxy) -> None:
    garbage = 'not-a-jwt"\\<script>'
    response, data = proxy.raw("GET", "/", garbage)
    assert response.status == 401
    assert garbage not in data.decode()
    assert json.loads(data)["message"] == "malformed token"


def test_audience_may_be_a_list_containing_mlflow(proxy: Proxy, issuer: Issuer) -> None:
    token = issuer.token(aud=["account", "mlflow"], preferred_username="carol", roles=["Default"])
    response, _ = proxy.raw("GET", "/api/2.0/mlflow/experiments/search", token)
    assert response.status == 200


def test_gate_log_never_contains_a_token(gate: Gate, proxy: Proxy, issuer: Issuer, bob: str) -> None:
    proxy.raw("POST", "/api/2.0/mlflow/experiments/delete", bob)
    expired = issuer.token(exp=int(time.time()) - 60)
    proxy.raw("GET", "/", expired)
    log = gate.log.read_text()
    assert "denied 403 user=bob method=POST path=/api/2.0/mlflow/experiments/delete" in log
    assert "reason=token expired" in log
    for secret in (bob, expired, bob.split(".")[2], expired.split(".")[2]):
        assert secret not in log


# --------------------------------------------------------------------------------------------------------------
# Authorization: Default may use everything but delete; Admin may delete
# --------------------------------------------------------------------------------------------------------------

DELETE_ENDPOINTS = [
    ("POST", "/api/2.0/mlflow/experiments/delete"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/delete"),
    ("POST", "/api/2.0/mlflow/experiments/delete-experiment-tag"),
    ("POST", "/api/2.0/mlflow/runs/delete"),
    ("POST", "/ajax-api/2.0/mlflow/runs/delete-tag"),
    ("DELETE", "/api/2.0/mlflow/registered-models/delete"),
    ("DELETE", "/ajax-api/2.0/mlflow/registered-models/delete-tag"),
    ("DELETE", "/api/2.0/mlflow/model-versions/delete"),
    ("DELETE", "/api/2.0/mlflow/model-versions/delete-tag"),
    ("DELETE", "/api/2.0/mlflow/registered-models/alias"),
    ("DELETE", "/api/2.0/mlflow/logged-models/m-0123"),
    ("DELETE", "/ajax-api/2.0/mlflow/logged-models/m-0123/tags/stage"),
    ("POST", "/api/3.0/mlflow/traces/delete-traces"),
    ("POST", "/ajax-api/2.0/mlflow/traces/delete-traces"),
    ("DELETE", "/api/3.0/mlflow/traces/tr-1/tags"),
    ("DELETE", "/api/3.0/mlflow/traces/tr-1/assessments/a-1"),
    ("DELETE", "/api/3.0/mlflow/datasets/d-1"),
    ("DELETE", "/ajax-api/3.0/mlflow/datasets/d-1/records"),
    ("DELETE", "/api/3.0/mlflow/scorers/delete"),
    ("DELETE", "/api/2.0/mlflow/webhooks/wh-1"),
    ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/run-1/artifacts/model.pkl"),
    ("DELETE", "/api/3.0/mlflow/prompt-optimization/jobs/j-1"),
    ("DELETE", "/api/3.0/mlflow/gateway/secrets/delete"),
    ("DELETE", "/api/3.0/mlflow/workspaces/team-a"),
    ("POST", "/api/3.0/mlflow/datasets/d-1/remove-experiments"),
    ("POST", "/ajax-api/3.0/mlflow/review-queues/delete"),
    ("POST", "/ajax-api/3.0/mlflow/review-queues/items/remove"),
    ("DELETE", "/api/3.0/mlflow/mcp-servers/srv/aliases/prod"),
    ("DELETE", "/ajax-api/3.0/mlflow/gateway/endpoints/bindings/delete"),
]

# Destructive without saying "delete": restoring what an Admin deleted, renames that free a name, uploads past MLflow.
ADMIN_ONLY = [
    ("POST", "/api/2.0/mlflow/experiments/restore", "restore deleted objects"),
    ("POST", "/ajax-api/2.0/mlflow/runs/restore", "restore deleted objects"),
    ("POST", "/api/2.0/mlflow/registered-models/rename", "rename experiments and registered models"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/update", "rename experiments and registered models"),
    ("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", "upload past the tracking server"),
]

# Paths that are none of MLflow's routes (a route a later MLflow might add; MLflow under a --static-prefix the gate
# was not told about): fail closed, Admin only, except reads (MLflow answers 404).
UNKNOWN_ROUTES = [
    ("POST", "/api/4.0/mlflow/something-new/bulk-delete"),
    ("POST", "/mlflow-prefix/api/2.0/mlflow/runs/delete"),
    ("POST", "/api/2.0/mlflow/runs/log-metric;jsessionid=1"),
    ("PUT", "/api/2.0/mlflow/runs/log-metric"),  # a real path, not with this method
]

# Spellings of POST /api/2.0/mlflow/experiments/delete that uvicorn/werkzeug may route the same way.
PATH_TRICKS = [
    "//api/2.0/mlflow/experiments/delete",
    "/api/2.0//mlflow///experiments//delete",
    "/api/2.0/mlflow/experiments%2Fdelete",
    "/api/2.0/mlflow/experiments/%64elete",
    "/api/2.0/mlflow/experiments/%2564elete",
    "/api/2.0/mlflow/%65xperiments/d%65l%65t%65",
    "/api/2.0/mlflow/./experiments/./delete",
    "/api/2.0/mlflow/runs/../experiments/delete",
    "/api/2.0/mlflow/runs/%2E%2E/experiments/delete",
    "/API/2.0/MLFLOW/EXPERIMENTS/DELETE",
    "/api/2.0/mlflow/experiments/delete/",
    "/api/2.0/mlflow/experiments/delete?experiment_id=1",
    "/api/2.0/mlflow/experiments/delete;jsessionid=1",
    "/api/2.0/mlflow-artifacts/artifacts/x/../../mlflow/experiments/delete",
    "/api/2.0/mlflow-artifacts/artifacts%2F..%2F..%2Fmlflow%2Fexperiments%2Fdelete",
    "http://mlflow.example/api/2.0/mlflow/experiments/delete",  # absolute-form request target
]

ALLOWED_FOR_DEFAULT = [
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("GET", "/api/2.0/mlflow/experiments/search?filter=name%20LIKE%20%27delete%25%27"),
    ("POST", "/api/2.0/mlflow/runs/log-metric"),
    ("POST", "/api/2.0/mlflow/runs/set-tag"),
    ("POST", "/ajax-api/2.0/mlflow/upload-artifact?path=delete_me.txt"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/run-1/artifacts/deleted_rows.csv"),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts/1/run-1/artifacts/removed/model.pkl"),
    ("GET", "/get-artifact?path=delete.txt&run_uuid=r1"),
    ("POST", "/graphql"),
    ("GET", "/"),
    # Model aliases: reading and setting one is ordinary use; deleting one needs Admin (DELETE_ENDPOINTS).
    ("GET", "/api/2.0/mlflow/registered-models/alias?name=m&alias=champion"),
    ("POST", "/api/2.0/mlflow/registered-models/alias"),
    ("POST", "/ajax-api/2.0/mlflow/registered-models/alias"),
    # Names users choose are route parameters, never routes.
    ("POST", "/gateway/remove-pii/mlflow/invocations"),
    ("POST", "/gateway/proxy/delete-bot/v1/chat"),
    ("GET", "/ajax-api/3.0/mlflow/mcp-servers/purge-helper"),
    ("GET", "/api/3.0/mlflow/mcp-servers/delete-me/versions/1"),
    ("GET", "/api/2.0/mlflow/logged-models/m-delete"),
    ("PATCH", "/api/2.0/mlflow/logged-models/m-remove/tags"),
    ("POST", "/api/2.0/mlflow/runs/update"),  # run names are labels: renaming a run is ordinary use
    ("GET", "/static-files/static/js/delete-dialog.js"),
    ("GET", "/ajax-api/2.0/mlflow/users/current"),  # the UI's probe for MLflow's basic-auth app: not a route here
]


@pytest.mark.parametrize(("method", "path"), DELETE_ENDPOINTS)
def test_default_user_cannot_call_delete_endpoints(proxy: Proxy, upstream: Upstream, bob: str, method, path) -> None:
    before = len(upstream.requests)
    response, data = proxy.raw(method, path, bob, body=b"{}")
    assert response.status == 403
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(data) == {
        "error_code": "PERMISSION_DENIED",
        "message": "role Admin required to delete (user bob has Default)",
    }
    assert len(upstream.requests) == before


@pytest.mark.parametrize(("method", "path", "action"), ADMIN_ONLY)
def test_default_user_cannot_restore_rename_or_upload_past_mlflow(
    proxy: Proxy, upstream: Upstream, bob: str, method: str, path: str, action: str
) -> None:
    before = len(upstream.requests)
    response, data = proxy.raw(method, path, bob, body=b"{}")
    assert response.status == 403
    assert json.loads(data)["message"] == f"role Admin required to {action} (user bob has Default)"
    assert len(upstream.requests) == before


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
def test_routes_unknown_to_the_policy_need_admin(proxy: Proxy, bob: str, alice: str, method: str, path: str) -> None:
    response, data = proxy.raw(method, path, bob, body=b"{}")
    assert response.status == 403
    assert json.loads(data)["message"] == (
        "role Admin required to call a route this policy does not know (user bob has Default)"
    )
    assert proxy.raw(method, path, alice, body=b"{}")[0].status == 200


@pytest.mark.parametrize("path", PATH_TRICKS)
def test_path_tricks_do_not_bypass_the_delete_rule(proxy: Proxy, bob: str, path: str) -> None:
    response, data = proxy.raw("POST", path, bob, body=b"{}")
    assert (response.status, json.loads(data)["error_code"]) == (403, "PERMISSION_DENIED")


def test_client_cannot_tell_the_gate_what_it_requests(proxy: Proxy, bob: str) -> None:
    spoof = {"X-Original-URI": "/api/2.0/mlflow/experiments/search", "X-Original-Method": "GET"}
    response, _ = proxy.raw("POST", "/api/2.0/mlflow/experiments/delete", bob, body=b"{}", **spoof)
    assert response.status == 403


@pytest.mark.parametrize(
    "uri",
    [
        # Forms nginx refuses or rewrites itself, judged by the gate directly.
        "http://mlflow.example/api/2.0/mlflow/experiments/delete",
        "/api/2.0/mlflow/experiments\\delete",
        "/api/2.0/mlflow/experiments/%252564elete",
    ],
)
def test_gate_judges_raw_uris_the_strictest_way(gate: Gate, bob: str, uri: str) -> None:
    assert gate.check(bob, "POST", uri).status_code == 403


@pytest.mark.parametrize(("method", "path"), ALLOWED_FOR_DEFAULT)
def test_default_user_may_use_the_rest_of_the_api(proxy: Proxy, bob: str, method: str, path: str) -> None:
    response, _ = proxy.raw(method, path, bob, body=b"{}")
    assert response.status == 200


@pytest.mark.parametrize(
    ("method", "path"),
    DELETE_ENDPOINTS[:6] + [("POST", p) for p in PATH_TRICKS[:4]] + [(m, p) for m, p, _ in ADMIN_ONLY[:3]],
)
def test_admin_may_delete(proxy: Proxy, alice: str, method: str, path: str) -> None:
    response, _ = proxy.raw(method, path, alice, body=b"{}")
    assert response.status == 200


def test_user_without_any_role_gets_403(proxy: Proxy, issuer: Issuer) -> None:
    response, data = proxy.raw("GET", "/api/2.0/mlflow/experiments/search", issuer.user_token("eve", []))
    assert response.status == 403
    assert json.loads(data)["message"] == "role Admin or Default required to use MLflow (user eve has no roles)"


def test_odd_usernames_and_roles_cannot_break_the_json_error(proxy: Proxy, issuer: Issuer) -> None:
    token = issuer.user_token('bo"b\\\n', ['Def"ault'])
    response, data = proxy.raw("POST", "/api/2.0/mlflow/runs/delete", token)
    assert response.status == 403
    assert json.loads(data)["message"] == "role Admin required to delete (user bo?b?? has Def?ault)"


# --------------------------------------------------------------------------------------------------------------
# What reaches MLflow, and what the proxy records
# --------------------------------------------------------------------------------------------------------------


def test_upstream_gets_the_verified_user_and_no_token(proxy: Proxy, upstream: Upstream, bob: str) -> None:
    response, data = proxy.raw(
        "POST", "/api/2.0/mlflow/runs/log-metric?x=1", bob, body=b"{}", **{"X-Forwarded-User": "alice"}
    )
    seen = json.loads(data)
    assert response.status == 200
    assert seen["path"] == "/api/2.0/mlflow/runs/log-metric?x=1"
    assert seen["headers"]["X-Forwarded-User"] == "bob"
    assert seen["headers"]["X-Forwarded-Roles"] == "Default"
    assert seen["headers"]["Host"] == upstream.address
    assert "Authorization" not in seen["headers"]


def test_raw_request_uri_reaches_upstream_unchanged(proxy: Proxy, alice: str) -> None:
    _, data = proxy.raw("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=a%2Fb%20c", alice)
    assert json.loads(data)["path"] == "/api/2.0/mlflow/experiments/get-by-name?experiment_name=a%2Fb%20c"


def test_access_log_names_the_user_of_each_request(proxy: Proxy, alice: str) -> None:
    proxy.raw("GET", "/api/2.0/mlflow/experiments/search?secret_in_query=1", alice)
    proxy.raw("GET", "/api/2.0/mlflow/runs/get")
    wait_until(lambda: '"GET /api/2.0/mlflow/runs/get" 401' in proxy.access_log)  # nginx logs after it answered
    lines = proxy.access_log.splitlines()
    assert any("user=alice" in line and '"GET /api/2.0/mlflow/experiments/search" 200' in line for line in lines)
    assert any("user=- " in line and '"GET /api/2.0/mlflow/runs/get" 401' in line for line in lines)
    assert alice not in proxy.access_log
    assert "secret_in_query" not in proxy.access_log


def test_a_50_mb_upload_and_download_stream_through_whole(proxy: Proxy, alice: str) -> None:
    body = os.urandom(50 * 1024 * 1024)
    url = f"{proxy.url}/api/2.0/mlflow-artifacts/artifacts/1/run-1/artifacts/big.bin"
    response = requests.put(url, data=body, headers={"Authorization": f"Bearer {alice}"}, timeout=60)
    assert response.status_code == 200
    assert response.json()["size"] == len(body)
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()
    with requests.get(f"{proxy.url}/download", headers={"Authorization": f"Bearer {alice}"}, stream=True,
                      timeout=60) as download:  # fmt: skip
        assert sum(len(chunk) for chunk in download.iter_content(1 << 20)) == DOWNLOAD_SIZE


def test_gate_unreachable_fails_closed_with_503_json(upstream: Upstream, alice: str, tmp_path: Path) -> None:
    dead_gate = f"127.0.0.1:{free_port()}"
    proxy, proc = start_nginx(tmp_path, upstream.address, dead_gate)
    try:
        response, data = proxy.raw("GET", "/api/2.0/mlflow/experiments/search", alice)
    finally:
        stop(proc, signal.SIGQUIT)
    assert response.status == 503
    assert json.loads(data)["error_code"] == "TEMPORARILY_UNAVAILABLE"


# --------------------------------------------------------------------------------------------------------------
# Keys: rotation, unknown kids, health
# --------------------------------------------------------------------------------------------------------------


def test_rotated_key_is_accepted_after_one_refetch_and_garbage_kids_do_not_hammer_the_issuer(
    gate: Gate, issuer: Issuer
) -> None:
    rotated = new_key("key-2")
    issuer.keys.append(rotated)
    fetches = issuer.jwks_fetches
    response = gate.check(issuer.token(rotated, preferred_username="alice", roles=["Admin"]))
    assert response.status_code == 204
    assert response.headers["X-Auth-User"] == "alice"
    assert issuer.jwks_fetches == fetches + 1

    stranger = new_key("unused")
    for i in range(20):
        token = issuer.token(stranger, header={"kid": f"garbage-{i}"}, roles=["Admin"])
        response = gate.check(token)
        assert response.status_code == 401
        assert response.headers["X-Auth-Error"] == "unknown signing key"
    assert issuer.jwks_fetches <= fetches + 2


def test_healthz_reports_the_loaded_keys(gate: Gate) -> None:
    response = requests.get(f"{gate.url}/healthz", timeout=5)
    assert response.status_code == 200
    assert "key-1" in response.json()["kids"]


def test_gate_is_unhealthy_until_the_issuer_answers(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, str(GATE), "--port", str(port), "--issuer", f"http://127.0.0.1:{free_port()}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert response.status_code == 503
    finally:
        stop(proc)


# --------------------------------------------------------------------------------------------------------------
# Keycloak-shaped tokens (production): roles in realm_access / resource_access, issuer under /realms/<name>
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keycloak_gate(issuer: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    tmp = tmp_path_factory.mktemp("keycloak-gate")
    policy = yaml.safe_load(POLICY.read_text())
    policy["roles_claim"] = ["realm_access.roles", "resource_access.mlflow.roles"]
    policy_file = tmp / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(policy))
    g, proc = start_gate(tmp, f"{issuer.url}/realms/mlflow", policy_file)
    try:
        yield g
    finally:
        stop(proc)


def keycloak_token(issuer: Issuer, realm_roles: list[str], client_roles: list[str]) -> str:
    now = int(time.time())
    return issuer.token(
        iss=f"{issuer.url}/realms/mlflow",
        aud=["mlflow", "account"],
        sub=str(uuid.uuid4()),
        typ="Bearer",
        azp="jupyter",
        sid=str(uuid.uuid4()),
        jti=str(uuid.uuid4()),
        auth_time=now,
        scope="openid profile email offline_access",
        email_verified=True,
        preferred_username="bob.kc",
        email="bob@example.org",
        realm_access={"roles": [*realm_roles, "offline_access", "uma_authorization", "default-roles-mlflow"]},
        resource_access={"mlflow": {"roles": client_roles}, "account": {"roles": ["manage-account"]}},
    )


def test_keycloak_realm_role_default_may_log_but_not_delete(keycloak_gate: Gate, issuer: Issuer) -> None:
    token = keycloak_token(issuer, ["Default"], [])
    allowed = keycloak_gate.check(token, "POST", "/api/2.0/mlflow/runs/log-metric")
    assert allowed.status_code == 204
    assert allowed.headers["X-Auth-User"] == "bob.kc"
    denied = keycloak_gate.check(token, "POST", "/api/2.0/mlflow/experiments/delete")
    assert denied.status_code == 403
    assert denied.headers["X-Auth-Error"].startswith("role Admin required to delete (user bob.kc has Default")


def test_keycloak_client_role_admin_may_delete(keycloak_gate: Gate, issuer: Issuer) -> None:
    token = keycloak_token(issuer, ["Default"], ["Admin"])
    assert keycloak_gate.check(token, "POST", "/api/2.0/mlflow/experiments/delete").status_code == 204


def test_keycloak_gate_rejects_tokens_of_the_other_issuer(keycloak_gate: Gate, alice: str) -> None:
    response = keycloak_gate.check(alice)
    assert (response.status_code, response.headers["X-Auth-Error"]) == (401, "wrong issuer")


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local CA and a certificate for 127.0.0.1, made by the deployment's own script."""
    out = tmp_path_factory.mktemp("tls")
    subprocess.run(["bash", str(ROOT / "stack" / "tls" / "make-certs.sh"), "--out", str(out), "127.0.0.1"],
                   check=True, capture_output=True)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tls_issuer(private_ca: Path) -> Iterator[Issuer]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(private_ca / "server.crt", private_ca / "server.key")
    yield from serve_issuer(context)


def test_issuer_behind_a_private_ca_is_trusted_with_ca_file(tls_issuer: Issuer, private_ca: Path, tmp_path: Path):
    gate, proc = start_gate(tmp_path, tls_issuer.url, POLICY, "--ca-file", str(private_ca / "ca.crt"))
    try:
        assert gate.check(tls_issuer.user_token("bob", ["Default"])).status_code == 204
    finally:
        stop(proc)


def test_issuer_behind_an_unknown_ca_never_yields_keys(tls_issuer: Issuer, tmp_path: Path):
    fetches_before = tls_issuer.jwks_fetches
    port = free_port()
    log = tmp_path / "gate.log"
    cmd = [sys.executable, str(GATE), "--host", "127.0.0.1", "--port", str(port), "--issuer", tls_issuer.url]
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--policy", str(POLICY)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", {503}, proc, log)
        deadline = time.monotonic() + 10
        while "CERTIFICATE_VERIFY_FAILED" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "CERTIFICATE_VERIFY_FAILED" in log.read_text()
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503
        assert tls_issuer.jwks_fetches == fetches_before
    finally:
        stop(proc)
