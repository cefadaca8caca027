"""What authorizing every request costs: nginx without auth vs nginx + gate vs a round trip to the provider.

    .venv/bin/python bench/gate_throughput.py [--seconds 5] [--rounds 3] [--connections 16] [--upstream mlflow]
                                              [--short]

Three nginx fronts on free ports (a worker per core each, as in production), all before the same upstream: by
default a trivial one (an nginx `return 200` in a process of its own, so the upstream is never the limit and only
the authorization layer is measured), with --upstream mlflow the stack's MLflow (what users see):
- no auth: a plain proxy;
- gate: stack/nginx/mlflow-proxy.conf.template with our gate (local JWT validation), whose verdicts nginx reuses
  for repeat requests (same method, URI and token; docs/security.md, "The verdict cache"): the steady state of a
  client that repeats its calls, the first request of each key going to the gate;
- introspection: the same template with bench/introspection_gate.py, which asks a second IdP (opaque access
  tokens, IDP_ACCESS_TOKEN_FORMAT=opaque) for every request: the design of the seed template.
Every front gets the same requests, the bearer token included (nginx without auth ignores it), so that only the
authorization work differs. Load: `wrk` (one thread, N kept-alive connections) for --seconds per front, fronts
alternated every round;
requests/s and p99 are medians over the rounds. Without wrk a Python load generator is used (and said so): it
tops out far below nginx, so its no-auth figure is the client's limit, not nginx's.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchlib import (
    ROOT,
    Service,
    bot_token,
    heading,
    interleaved,
    local_stack,
    median,
    parser,
    percentile,
    table,
)

from stack.nginx.render import render_local  # noqa: E402
from stack.ports import free_port  # noqa: E402

FRONTS = ("no auth", "gate", "introspection")
PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
# The trivial upstream: an nginx of its own, so that every front (no auth included) runs beside it the same way.
BACKEND_CONF = """\
server {{
    listen 127.0.0.1:{backend};
    access_log off;
    location / {{
        default_type application/json;
        return 200 '{{"experiments": []}}\\n';
    }}
}}
"""
PLAIN_CONF = """\
upstream bench_backend {{
    server {upstream};
    keepalive 16;
}}
server {{
    listen 127.0.0.1:{front};
    access_log {log};
    location / {{
        proxy_pass http://bench_backend;
        proxy_set_header Host {upstream};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_request_buffering off;
        proxy_buffering off;
    }}
}}
"""


def _nginx(name: str, folder: Path, listen_port: int, upstream: str, gate: str, plain: str | None = None) -> Service:
    """An nginx of the stack's templates in `folder` (or, with `plain`, that server config instead)."""
    conf = render_local(folder, listen=f"127.0.0.1:{listen_port}", mlflow_upstream=upstream, gate_upstream=gate)
    # As in production (stack/docker/nginx/nginx.conf): a worker per core, for every front alike.
    conf.write_text(conf.read_text().replace("worker_processes 1;", "worker_processes auto;"))
    if plain is not None:
        (folder / "nginx" / "mlflow-proxy.conf").write_text(plain)
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return Service(name, [binary, "-p", str(conf.parent), "-c", str(conf), "-g", "daemon off;"], folder / f"{name}.log")


def _opaque_idp(workdir: Path, stack_run_dir: str) -> tuple[Service, str]:
    """A second IdP, same users and clients as the stack's, that issues opaque access tokens."""
    config = json.loads((Path(stack_run_dir) / "idp.json").read_text())
    port = free_port()
    config.update(
        port=port,
        issuer=f"http://127.0.0.1:{port}",
        keys_file=str(workdir / "idp-keys.json"),
        state_file=str(workdir / "idp-state.json"),
    )
    path = workdir / "idp.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    node = shutil.which("node") or "node"
    idp = Service(
        "opaque-idp",
        [node, str(ROOT / "stack" / "idp" / "server.mjs")],
        workdir / "idp.log",
        env={"IDP_CONFIG": str(path), "IDP_ACCESS_TOKEN_FORMAT": "opaque", "IDP_ACCESS_TOKEN_TTL": "3600"},
    )
    issuer = config["issuer"]
    idp.wait_ready(f"{issuer}/.well-known/openid-configuration")
    return idp, issuer


def _wrk(url: str, token: str, seconds: float, connections: int) -> tuple[float, float, int]:
    """requests/s, p99 seconds and non-2xx count of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-H", f"Authorization: Bearer {token}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99, out
    seconds_p99 = float(p99.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, seconds_p99, int(bad.group(1)) if bad else 0


def _python_load(url: str, token: str, seconds: float, connections: int) -> tuple[float, float, int]:
    """The same measure with threads on kept-alive http.client connections (when wrk is not installed)."""
    parts = urlsplit(url)
    latencies: list[float] = []
    bad = [0]
    deadline = time.monotonic() + seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while time.monotonic() < deadline:
            began = time.perf_counter()
            conn.request("GET", f"{parts.path}?{parts.query}", headers={"Authorization": f"Bearer {token}"})
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - began)
            if response.status != 200:
                bad[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - began), percentile(latencies, 99), bad[0]


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--seconds", type=float, default=5.0, help="load per front and round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default %(default)s)")
    p.add_argument("--connections", type=int, default=16, help="concurrent connections (default %(default)s)")
    p.add_argument(
        "--upstream",
        choices=("trivial", "mlflow"),
        default="trivial",
        help="behind every front: an nginx `return 200` (the authorization layer alone) or the stack's MLflow",
    )
    args = p.parse_args()
    if args.short:
        args.seconds, args.rounds, args.connections = 1.0, 1, 4
    load = _wrk if shutil.which("wrk") else _python_load
    tool = "wrk -t1" if load is _wrk else "a Python load generator (wrk not installed: no-auth is client-bound)"

    heading(
        "Authorization per request: nginx without auth vs nginx + gate vs introspection at the provider",
        f"`GET {PATH}` to {'a trivial upstream' if args.upstream == 'trivial' else 'MLflow'}, "
        f"{args.connections} connections, {args.seconds:g} s per front "
        f"and round, {args.rounds} rounds alternated, load from {tool}; medians.",
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    services: list[Service] = []
    try:
        with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (stack, endpoints):
            idp, opaque_issuer = _opaque_idp(workdir, endpoints["run_dir"])
            services.append(idp)
            bot = endpoints["clients"]["ci-bot"]
            checker_port = free_port()
            checker = Service(
                "introspection",
                [
                    sys.executable,
                    str(Path(__file__).with_name("introspection_gate.py")),
                    "--port",
                    str(checker_port),
                    "--issuer",
                    opaque_issuer,
                    "--client-id",
                    bot["client_id"],
                    "--client-secret-env",
                    "BOT_SECRET",
                ],
                workdir / "introspection.log",
                env={"BOT_SECRET": bot["client_secret"]},
            )
            services.append(checker)
            checker.wait_ready(f"http://127.0.0.1:{checker_port}/healthz")

            backend, ports = free_port(), {front: free_port() for front in FRONTS}
            gate = f"127.0.0.1:{endpoints['ports']['gate']}"
            upstream = f"127.0.0.1:{backend}"
            if args.upstream == "mlflow":
                upstream = endpoints["mlflow_upstream"].removeprefix("http://")
            else:
                trivial_conf = BACKEND_CONF.format(backend=backend)
                trivial = _nginx("backend", workdir / "backend", free_port(), upstream, gate, trivial_conf)
                services.append(trivial)
                trivial.wait_ready(f"http://{upstream}/")
            plain = PLAIN_CONF.format(upstream=upstream, front=ports["no auth"], log=workdir / "plain-access.log")
            for front, gate_upstream in (
                ("no auth", gate),
                ("gate", gate),
                ("introspection", f"127.0.0.1:{checker_port}"),
            ):
                folder = workdir / front.replace(" ", "-")
                service = _nginx(
                    front,
                    folder,
                    ports[front],
                    upstream,
                    gate_upstream,
                    plain if front == "no auth" else None,
                )
                services.append(service)
            for front in FRONTS:
                next(s for s in services if s.name == front).wait_ready(
                    f"http://127.0.0.1:{ports[front]}/health", expected=(200, 401)
                )

            opaque = bot_token({"issuer": opaque_issuer, "clients": endpoints["clients"]})
            jwt = bot_token(endpoints)
            tokens = {"no auth": jwt, "gate": jwt, "introspection": opaque}
            runs = interleaved(
                args.rounds,
                FRONTS,
                lambda front: load(
                    f"http://127.0.0.1:{ports[front]}{PATH}", tokens[front], args.seconds, args.connections
                ),
            )

        rows = []
        rate = {front: median([r[0] for r in runs[front]]) for front in FRONTS}
        for front in FRONTS:
            p99 = median([r[1] for r in runs[front]])
            bad = sum(r[2] for r in runs[front])
            rows.append((front, f"{rate[front]:.0f}", f"{1000 * p99:.2f}" if p99 else "-", bad))
        print(table(("front", "requests/s", "p99 ms", "non-2xx"), rows))
        gate_rate, plain_rate, intro_rate = rate["gate"], rate["no auth"], rate["introspection"]
        print(
            f"\nratio gate/no-auth: {gate_rate / plain_rate:.2f}x (goal >= 0.8x); "  # type: ignore[operator]
            f"ratio gate/introspection: {gate_rate / intro_rate:.2f}x (goal >= 5x)"
        )  # type: ignore[operator]
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
