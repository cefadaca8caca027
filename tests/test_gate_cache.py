# ruff: noqa: F811 - the issuer and upstream fixtures of tests/test_gate.py are imported, then requested by name
"""The gate's verdict cache in nginx: repeat requests skip the gate, and no cached verdict ever answers another request.

Real nginx (stack/nginx templates: the Lua check and its shared-memory store), real gate (at DEBUG level it logs
every allow it decides, and it always logs denials, so a repeat that nginx answered itself shows as a missing
line), the JWKS issuer of tests/test_gate.py (tokens signed for real, any exp at will) and its echo upstream,
which reports the identity nginx forwarded. Each test that needs its own gate settings (no leeway, a short cap, a
gate to stop) starts its own gate and nginx and ends them by PID.
The last test repeats the role and secrecy checks on the real local stack (its IdP's tokens, MLflow behind).
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from stack.gate.gate import reuse_until
from stack.ports import free_port

from .support.tokens import user_tokens
from .support.waiting import wait_until
from .test_gate import (  # noqa: F401 - issuer and upstream are fixtures, used by name
    GATE,
    NGINX,
    Gate,
    Issuer,
    Proxy,
    Upstream,
    issuer,
    new_key,
    start_gate,
    start_nginx,
    stop,
    upstream,
    wait_http,
)

pytestmark = [pytest.mark.stack]

SEARCH = "/api/2.0/mlflow/experiments/search"
IDENTITY = ("User", "Roles", "Subject", "Issuer", "Permissions")  # X-Auth-* from the gate, X-Forwarded-* to MLflow
DELETE = "/api/2.0/mlflow/experiments/delete"


class Front:
    """A gate and the nginx in front of it, with the cache folder and every log they write."""

    def __init__(self, tmp: Path, issuer: Issuer, upstream: Upstream, *gate_args: str, workers: int = 1) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        policy_and_args = (GATE.parent / "policy.yaml", "--log-level", "DEBUG", *gate_args)
        self.gate, self.gate_proc = start_gate(tmp, issuer.url, *policy_and_args)
        try:
            self.proxy, self.nginx_proc = start_nginx(tmp / "front", upstream.address, self.gate.address, workers)
        except BaseException:
            stop(self.gate_proc)
            raise

    def nginx_files(self) -> list[Path]:
        """Every file nginx wrote (logs, temp folders) or reads (its rendered config)."""
        return [p for p in (self.proxy.run_dir / "nginx").rglob("*") if p.is_file()]

    def denials_logged(self, user: str, path: str, method: str = "POST") -> int:
        return self.gate.log.read_text().count(f"denied 403 user={user} method={method} path={path} ")

    def allows_logged(self, user: str, path: str, method: str = "GET") -> int:
        return self.gate.log.read_text().count(f"allowed user={user} method={method} path={path}\n")

    def unauthenticated_logged(self) -> int:
        return self.gate.log.read_text().count("denied 401 ")

    def request(self, method: str, path: str, token: str | None, **headers: str) -> tuple[int, dict]:
        response, data = self.proxy.raw(method, path, token, **headers)
        return response.status, (json.loads(data) if data else {})

    def close(self) -> None:
        stop(self.nginx_proc, signal.SIGQUIT)
        stop(self.gate_proc)


@pytest.fixture(scope="module")
def front(issuer: Issuer, upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    f = Front(tmp_path_factory.mktemp("cache"), issuer, upstream)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def own_front(issuer: Issuer, upstream: Upstream, tmp_path: Path) -> Iterator:
    """Starts a Front with gate options of the test's choosing; all are ended when the test ends."""
    fronts: list[Front] = []

    def make(*gate_args: str, workers: int = 1) -> Front:
        fronts.append(Front(tmp_path / f"front-{len(fronts)}", issuer, upstream, *gate_args, workers=workers))
        return fronts[-1]

    try:
        yield make
    finally:
        for f in fronts:
            f.close()


def user(issuer: Issuer, name: str, role: str, **claims: object) -> str:
    return issuer.user_token(name, [role], **claims)


# ------------------------------------------------------------------------------------------ lifetime of a verdict


@pytest.mark.parametrize(
    ("exp", "now", "cap", "until"),
    [
        (1000.0, 500.0, 30, 530),  # the cap
        (1000.0, 990.0, 30, 999),  # the second before exp: nginx serves through the whole second it is given
        (1000.5, 990.2, 30, 1000),  # exp mid-second: the last whole second before it
        (1000.0, 999.0, 30, 999),  # last second of the token's life
        (1000.0, 999.5, 30, 0),  # less than that left: not reused
        (1000.0, 1000.0, 30, 0),  # expired (the gate's leeway still accepted it): never reused
        (1000.0, 500.0, 0, 0),  # cache switched off
    ],
)
def test_a_verdict_is_reused_at_most_until_the_cap_and_never_past_the_tokens_exp(exp, now, cap, until) -> None:
    assert reuse_until(exp, now, cap) == until


def test_the_gate_gives_allows_and_denials_a_lifetime_and_401s_none(front: Front, issuer: Issuer) -> None:
    exp = int(time.time()) + 20
    bob = user(issuer, "bob", "Default", exp=exp)
    allowed = front.gate.check(bob)
    denied = front.gate.check(bob, "POST", DELETE)
    refused = front.gate.check(issuer.token(exp=int(time.time()) - 60))
    assert (allowed.status_code, denied.status_code, refused.status_code) == (204, 403, 401)
    assert allowed.headers["X-Accel-Expires"] == denied.headers["X-Accel-Expires"] == f"@{exp - 1}"
    assert refused.headers.get("X-Accel-Expires", "0") == "0"


# ------------------------------------------------------------------------------------------ what may be reused


def test_a_repeated_denial_comes_from_the_cache_and_stays_a_denial(front: Front, issuer: Issuer) -> None:
    frank = user(issuer, "frank", "Default")
    path = f"{DELETE}?n=repeat"
    for _ in range(3):
        status, body = front.request("POST", path, frank)
        assert status == 403 and body["error_code"] == "PERMISSION_DENIED"
        assert "Admin" in body["message"]
    # The gate judged it once; nginx answered the other two (the same message included) from its cache.
    assert front.denials_logged("frank", DELETE) == 1


def test_a_default_users_denial_is_never_an_allow_and_an_admins_allow_never_reaches_a_default_user(
    front: Front, issuer: Issuer
) -> None:
    bob, alice = user(issuer, "bob", "Default"), user(issuer, "alice", "Admin")
    # Both orders, each on a URI of its own: the first verdict on the URI is cached when the second user comes.
    for order, path in (("bob first", f"{DELETE}?order=1"), ("alice first", f"{DELETE}?order=2")):
        for token in (bob, alice) if order == "bob first" else (alice, bob):
            front.request("POST", path, token)
        for _ in range(2):
            status, _ = front.request("POST", path, bob)
            assert status == 403, order
            status, seen = front.request("POST", path, alice)
            assert status == 200, order
            assert seen["headers"]["X-Forwarded-User"] == "alice"
            assert seen["headers"]["X-Forwarded-Roles"] == "Admin"


def test_another_token_never_gets_a_cached_verdict_nor_its_identity(front: Front, issuer: Issuer) -> None:
    alice, carol = user(issuer, "alice", "Admin"), user(issuer, "carol", "Default")
    path = f"{SEARCH}?who=1"
    judged = front.allows_logged("alice", SEARCH)
    assert front.request("GET", path, alice)[1]["headers"]["X-Forwarded-User"] == "alice"
    status, seen = front.request("GET", path, alice)
    assert status == 200 and seen["headers"]["X-Forwarded-User"] == "alice"
    assert seen["headers"]["X-Forwarded-Roles"] == "Admin"
    assert front.allows_logged("alice", SEARCH) == judged + 1, "the repeat came from the cache, identity included"
    judged_carol = front.allows_logged("carol", SEARCH)
    status, seen = front.request("GET", path, carol)
    assert status == 200 and seen["headers"]["X-Forwarded-User"] == "carol"
    assert seen["headers"]["X-Forwarded-Roles"] == "Default"
    assert front.allows_logged("carol", SEARCH) == judged_carol + 1, "the gate judged carol's token itself"
    # Tokens that are alice's claims but not alice's token: a foreign signature, an expired copy, a truncation.
    forged = issuer.token(new_key(issuer.keys[0].kid), preferred_username="alice", roles=["Admin"])
    for token, reason in (
        (forged, "invalid signature"),
        (issuer.token(preferred_username="alice", roles=["Admin"], exp=int(time.time()) - 60), "token expired"),
        (alice[:-2], "invalid signature"),
        (alice + "x", "invalid signature"),
    ):
        status, body = front.request("GET", path, token)
        assert (status, body["message"]) == (401, reason)
    # Not even the same token in another spelling of the header: the gate reads the exact value.
    assert front.request("GET", path, None, Authorization=f"bearer  {alice}")[0] == 200
    assert front.request("GET", path, None, Authorization=f"Basic {alice}")[0] == 401


def test_the_method_and_the_raw_uri_are_part_of_the_key(front: Front, issuer: Issuer) -> None:
    bob = user(issuer, "hugo", "Default")
    # A read of the delete route's path is allowed (MLflow answers 404); the delete itself is not.
    assert front.request("GET", DELETE, bob)[0] == 200
    assert front.request("GET", DELETE, bob)[0] == 200
    assert front.allows_logged("hugo", DELETE) == 1, "the GET's allow is cached"
    assert front.request("POST", DELETE, bob)[0] == 403
    assert front.request("GET", DELETE, bob)[0] == 200
    assert front.request("DELETE", DELETE, bob)[0] == 403
    assert front.request("DELETE", DELETE, bob)[0] == 403
    assert (front.denials_logged("hugo", DELETE), front.denials_logged("hugo", DELETE, "DELETE")) == (1, 1)
    # One byte of the URI apart: a query the gate ignores is still another key (judged afresh, same verdict).
    assert front.request("POST", DELETE + "?", bob)[0] == 403
    assert front.denials_logged("hugo", DELETE) == 2


@pytest.mark.parametrize(
    "path",
    [
        "/api/2.0/mlflow//experiments/delete",
        "/api/2.0/mlflow/experiments%2Fdelete",
        "/api/2.0/mlflow/experiments/%64elete",
        "/api/2.0/mlflow/runs/../experiments/delete",
        "/api/2.0/mlflow/experiments/delete/",
    ],
)
def test_path_tricks_stay_refused_once_their_plain_neighbours_are_cached(front: Front, issuer: Issuer, path) -> None:
    bob = user(issuer, "bob", "Default")
    # Allowed requests of bob's on nearby URIs are in the cache; the trick never borrows their verdict.
    for neighbour in ("/api/2.0/mlflow/experiments/get", "/api/2.0/mlflow/runs/search", DELETE):
        front.request("GET", neighbour, bob)
        front.request("POST", "/api/2.0/mlflow/runs/search", bob)
    for _ in range(2):
        assert front.request("POST", path, bob)[0] == 403


def test_two_authorization_headers_never_mix_two_users(front: Front, issuer: Issuer) -> None:
    bob, alice = user(issuer, "bob", "Default"), user(issuer, "alice", "Admin")
    path = f"{DELETE}?dup=1"
    assert front.request("POST", path, alice)[0] == 200  # alice's allow is cached
    conn = http.client.HTTPConnection(front.proxy.url.removeprefix("http://"), timeout=10)
    conn.putrequest("POST", path)
    conn.putheader("Authorization", f"Bearer {bob}")
    conn.putheader("Authorization", f"Bearer {alice}")
    conn.putheader("Content-Length", "0")
    conn.endheaders()
    response = conn.getresponse()
    data = response.read()
    conn.close()
    # nginx 1.22 refuses the duplicate (400); a later nginx would hand the gate exactly the value of the key.
    assert response.status in (400, 403), data


def test_workers_share_verdicts_and_each_repeat_carries_its_own_identity(own_front, issuer: Issuer) -> None:
    """Two workers: a worker that did not ask the gate takes the verdict from the shared store, whole."""
    f = own_front(workers=2)
    ivan, judy = user(issuer, "ivan", "Admin"), user(issuer, "judy", "Default")
    path = f"{DELETE}?workers=1"
    forwarded = set()
    for _ in range(12):  # a new connection each time: reuseport spreads them over both workers
        status, seen = f.request("POST", path, ivan)
        assert status == 200
        forwarded.add(tuple(seen["headers"].get(f"X-Forwarded-{h}") for h in IDENTITY))
        status, body = f.request("POST", path, judy)
        assert (status, body["error_code"]) == (403, "PERMISSION_DENIED") and "Admin" in body["message"]
    assert (f.allows_logged("ivan", DELETE, "POST"), f.denials_logged("judy", DELETE)) == (1, 1)
    fresh = f.gate.check(ivan, "POST", path).headers
    assert forwarded == {tuple(fresh.get(f"X-Auth-{h}") for h in IDENTITY)}
    assert "ivan" in next(iter(forwarded)) and "Admin" in next(iter(forwarded))


# ------------------------------------------------------------------------------------------ expiry, outages, 5xx


def test_a_cached_allow_ends_when_its_token_expires(own_front, issuer: Issuer) -> None:
    f = own_front("--leeway", "0", "--verdict-cache-seconds", "60")
    exp = int(time.time()) + 4
    bob = user(issuer, "bob", "Default", exp=exp)
    path = f"{SEARCH}?expiring=1"
    assert f.request("GET", path, bob)[0] == 200
    assert f.request("GET", path, bob)[0] == 200
    assert f.allows_logged("bob", SEARCH) == 1, "the allow was cached"
    wait_until(lambda: time.time() >= exp + 1, timeout=30)
    status, body = f.request("GET", path, bob)
    assert (status, body["message"]) == (401, "token expired")


def test_a_gate_that_grants_no_lifetime_is_asked_every_time(own_front, issuer: Issuer) -> None:
    f = own_front("--verdict-cache-seconds", "0")
    bob = user(issuer, "bob", "Default")
    for _ in range(3):
        assert f.request("GET", SEARCH, bob)[0] == 200
        assert f.request("POST", DELETE, bob)[0] == 403
    assert (f.allows_logged("bob", SEARCH), f.denials_logged("bob", DELETE)) == (3, 3)


def test_gate_down_is_503_and_cached_allows_last_only_their_lifetime(own_front, issuer: Issuer) -> None:
    cap = 3
    f = own_front("--verdict-cache-seconds", str(cap))
    bob = user(issuer, "bob", "Default")
    cached = f"{SEARCH}?outage=1"
    assert f.request("GET", cached, bob)[0] == 200
    cached_at = time.time()
    stop(f.gate_proc)

    status, body = f.request("GET", f"{SEARCH}?outage=2", bob)
    assert status == 503 and body["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert f.request("POST", f"{DELETE}?outage=1", bob)[0] == 503
    # Within its lifetime the cached allow may still answer (documented), then never again without the gate.
    wait_until(lambda: time.time() >= cached_at + cap + 1.5, timeout=30)
    assert f.request("GET", cached, bob)[0] == 503


def test_401_and_gate_errors_are_never_cached(own_front, issuer: Issuer, upstream: Upstream, tmp_path: Path) -> None:
    f = own_front()
    before = f.unauthenticated_logged()  # nginx's readiness probe had no token
    for _ in range(2):
        for token in (None, "garbage", issuer.token(exp=int(time.time()) - 60)):
            assert f.request("GET", SEARCH, token)[0] == 401
    assert f.unauthenticated_logged() == before + 6, "the gate judged every 401 itself"
    # A gate without its issuer's keys answers 503: nginx passes it on as 503 and keeps nothing.
    port = free_port()
    log = tmp_path / "nokeys-gate.log"
    cmd = [sys.executable, str(GATE), "--port", str(port), "--issuer", f"http://127.0.0.1:{free_port()}"]
    with log.open("wb") as out:
        gate = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", {503}, gate, log)
        proxy, nginx = start_nginx(tmp_path / "nokeys", upstream.address, f"127.0.0.1:{port}")
        try:
            bob = user(issuer, "bob", "Default")
            for _ in range(2):
                response, data = proxy.raw("GET", SEARCH, bob)
                assert response.status == 503 and json.loads(data)["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert log.read_text().count("no decision for GET ") == 2, "the gate was asked both times"
        finally:
            stop(nginx, signal.SIGQUIT)
    finally:
        stop(gate)


# ------------------------------------------------------------------------------------------ a full store, a huge key


def nginx_worker_rss_mib(f: Front) -> float:
    return sum(child.memory_info().rss for child in psutil.Process(f.nginx_proc.pid).children()) / 2**20


def test_a_full_store_evicts_the_least_recently_used_and_keeps_answering_right(own_front, issuer: Issuer) -> None:
    """Fills the 16 MiB store and the worker's 2000 recent verdicts past their bounds with distinct requests.

    Each key carries a ~6 KiB query (nginx's request line holds 8 KiB), so ~2000 verdicts fill the shared store.
    The oldest verdict then goes back to the gate, the newest is still answered from memory, nothing is logged as
    a failure and nginx's memory stays bounded over two more fills.
    """
    f = own_front()
    bob = user(issuer, "bob", "Default")
    pad = "p" * 6000
    count = 3000
    conn = http.client.HTTPConnection(f.proxy.url.removeprefix("http://"), timeout=30)
    headers = {"Authorization": f"Bearer {bob}"}

    def fill(first: int, last: int) -> None:
        for i in range(first, last):
            conn.request("GET", f"{SEARCH}?fill={i}&pad={pad}", headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 200, i

    try:
        fill(0, count)
        assert f.allows_logged("bob", SEARCH) == count, "every distinct request was a miss"
        after_first_fill = nginx_worker_rss_mib(f)

        status, seen = f.request("GET", f"{SEARCH}?fill={count - 1}&pad={pad}", bob)
        assert status == 200 and f.allows_logged("bob", SEARCH) == count, "the newest verdict is still in memory"
        status, seen = f.request("GET", f"{SEARCH}?fill=0&pad={pad}", bob)
        assert status == 200 and f.allows_logged("bob", SEARCH) == count + 1, "the oldest went back to the gate"
        assert seen["headers"]["X-Forwarded-User"] == "bob" and seen["headers"]["X-Forwarded-Roles"] == "Default"
        status, body = f.request("POST", DELETE, bob)
        assert (status, body["error_code"]) == (403, "PERMISSION_DENIED"), "a denial is still a denial when full"

        # Evicting all the time now. Memory is bounded by the store (16 MiB, mapped) and the 2000 recent verdicts,
        # plus what LuaJIT's collector lets pile up before it runs (up to about the live heap again): a leak of
        # every evicted verdict would add ~2 x 3000 x 7 KiB = 41 MiB over these two fills.
        fill(count, 3 * count)
        growth = nginx_worker_rss_mib(f) - after_first_fill
        assert growth < 24, f"nginx grew {growth:.1f} MiB over two more fills of a full store"
    finally:
        conn.close()
    errors = (f.proxy.run_dir / "nginx" / "error.log").read_text()
    assert not [line for line in errors.splitlines() if any(f"[{level}]" in line for level in ("crit", "alert"))]


def test_a_header_too_large_for_a_key_is_refused_by_nginx_before_the_gate(front: Front, issuer: Issuer) -> None:
    """A key longer than a shared-store key (64 KiB) cannot form: nginx refuses a header over 8 KiB first."""
    token = user(issuer, "bob", "Default", padding="x" * 70_000)
    asked = front.gate.log.read_text().count("\n")
    response, _ = front.proxy.raw("GET", f"{SEARCH}?huge=1", token)
    assert response.status == 400
    assert front.gate.log.read_text().count("\n") == asked, "the gate was never asked"
    header, payload, signature = token.split(".")
    for path in [front.gate.log, *front.nginx_files()]:
        assert signature.encode() not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------ nothing secret on disk


def test_no_token_in_any_file_nginx_or_the_gate_writes(front: Front, issuer: Issuer) -> None:
    tokens = [user(issuer, "dora", "Default"), user(issuer, "erin", "Admin")]
    for token in tokens:
        for method, path in (("GET", f"{SEARCH}?secret_in_query=s3cr3t"), ("POST", DELETE), ("GET", SEARCH)):
            front.request(method, path, token)
            front.request(method, path, token)  # the repeat from the cache
    assert front.allows_logged("dora", SEARCH) == 2, "verdicts were cached (one per query string)"
    wait_until(lambda: "secret_in_query" not in front.proxy.access_log and "dora" in front.proxy.access_log)
    files = [front.gate.log, *front.nginx_files()]
    assert not (front.proxy.run_dir / "nginx" / "gate-cache").exists(), "verdicts live in memory only"
    for path in files:
        data = path.read_bytes()
        for token in tokens:
            header, payload, signature = token.split(".")
            for secret in (token, payload, signature):
                assert secret.encode() not in data, path


def test_nginx_renders_with_the_lua_module_and_the_shared_store(front: Front) -> None:
    conf = (front.proxy.run_dir / "nginx" / "mlflow-proxy.conf").read_text()
    main = (front.proxy.run_dir / "nginx" / "nginx.conf").read_text()
    assert "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;" in main
    assert "ngx_http_js_module" not in main
    assert "lua_shared_dict mlflow_gate_verdicts 16m;" in conf
    assert 'require("mlflow_gate").authorize()' in conf
    assert "proxy_cache" not in conf and "auth_request" not in conf, "one code path: the Lua check"
    assert Path(NGINX).exists()


# ------------------------------------------------------------------------------------------ the real stack


def test_on_the_real_stack_roles_stay_apart_and_no_token_reaches_any_file_or_log(stack) -> None:
    """The local IdP's own tokens, the stack's gate, nginx and MLflow: the same URI for a Default and an Admin."""
    tokens = {name: user_tokens(stack, name)["access_token"] for name in ("bob", "alice")}
    path = f"{DELETE}?cache-probe={time.time_ns()}"
    body = {"experiment_id": "999999999"}  # none such: alice's allowed delete gets MLflow's own 404
    statuses = {"bob": set(), "alice": set()}
    for order in (("bob", "alice"), ("alice", "bob"), ("bob", "alice")):
        for name in order:
            response = requests.post(
                stack.mlflow_url + path, json=body, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=30
            )
            statuses[name].add((response.status_code, response.json().get("error_code")))
    assert statuses == {"bob": {(403, "PERMISSION_DENIED")}, "alice": {(404, "RESOURCE_DOES_NOT_EXIST")}}

    stack.access_log(until="cache-probe")  # nginx logs after it answered
    files = [p for p in (stack.run_dir / "nginx").rglob("*") if p.is_file()]
    texts = [p.read_bytes() for p in files] + [stack.log("gate").encode(), stack.log("nginx").encode()]
    for token in tokens.values():
        for secret in (token, token.split(".")[1], token.split(".")[2]):
            assert not any(secret.encode() in text for text in texts)
