"""Our Jupyter `/mlflow/` proxy vs MLflow direct vs jupyter-server-proxy, interleaved in one run.

    .venv/bin/python bench/jupyter_proxy.py [--sizes 80 400 1024] [--rounds 3] [--requests 200] [--short]

Needs the `bench` extra (jupyter-server-proxy). Starts its own local stack and TWO `jupyter server`s on free ports
(stopped by PID at the end), so one proxy's heap never hides the other's: one runs our extension (signed in as
alice through the IdP's own pages), the other jupyter-server-proxy with a named proxy. Both proxies go straight to
MLflow (not through nginx + gate: that is bench/proxy_overhead.py), so the proxy is the only difference from
direct. Each size goes up (PUT with a Content-Length) and down through all three, the order alternated every
round; median MiB/s, ratios to direct, the Jupyter server's peak RSS growth during a transfer, sha256 of every
download. Then small API calls: p50/p99 latency. A failed or truncated transfer shows as such.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import requests
from benchlib import (
    Payload,
    PeakRSS,
    Transfer,
    artifact_url,
    download,
    fmt,
    heading,
    interleaved,
    latencies,
    local_stack,
    median,
    parser,
    percentile,
    ratio,
    rss_mib,
    table,
    unique_name,
    upload,
)

from stack.jupyter import JupyterProcess, extension_args, isolated_env, jupyter_argv
from stack.ports import free_port
from tests.support.idp_pages import authorize

PEER = "mlflow-peer"  # jupyter-server-proxy's named proxy, at {base_url}mlflow-peer/
USER = "alice"
# The peer is the `bench` extra (`./run bench` installs it); without it, ours is still measured against direct.
HAVE_PEER = importlib.util.find_spec("jupyter_server_proxy") is not None
PATHS = ("direct", "ours", "jupyter-server-proxy") if HAVE_PEER else ("direct", "ours")


class Jupyter(JupyterProcess):
    """One `jupyter server` with either our extension or jupyter-server-proxy, in its own process group."""

    def __init__(self, workdir: Path, endpoints: dict, peer: bool) -> None:
        port, token = free_port(), os.urandom(16).hex()
        home, config, root = workdir / "home", workdir / "config", workdir / "root"
        for folder in (home, config, root):
            folder.mkdir(parents=True)
        extensions = {"mlflow_oidc_jupyter.server": not peer, "jupyter_server_proxy": peer}
        # jupyter-server-proxy's named proxies are configured in Python only; no command = a server already running.
        servers = {
            PEER: {"port": int(endpoints["mlflow_upstream"].rsplit(":", 1)[1]), "launcher_entry": {"enabled": False}}
        }
        (config / "jupyter_server_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.ServerApp.jpserver_extensions = {extensions!r}\nc.ServerProxy.servers = {servers!r}\n"
        )
        extra = extension_args(endpoints, upstream_url=endpoints["mlflow_upstream"])
        super().__init__(
            jupyter_argv("jupyter_server", port=port, token=token, root_dir=root, extra=extra),
            # HOME and caches of its own: the sign-in lands in a throwaway token cache, never the user's.
            isolated_env(home, workdir / "runtime", JUPYTER_CONFIG_PATH=str(config)),
            workdir / "jupyter.log",
            f"http://127.0.0.1:{port}/",
            token,
        )
        self.peer = peer

    @property
    def base(self) -> str:
        return self.url + (f"{PEER}" if self.peer else "mlflow")

    def sign_in(self, password: str) -> None:
        """The server-side sign-in a browser would do, driven over HTTP through the IdP's login page."""
        http = requests.Session()
        http.headers["Authorization"] = f"token {self.token}"
        start = http.get(self.url + "mlflow/oauth/login", allow_redirects=False, timeout=30)
        if start.status_code != 302:
            raise RuntimeError(f"sign-in did not start: HTTP {start.status_code}")
        done = http.get(authorize(start.headers["Location"], USER, password), allow_redirects=False, timeout=30)
        if done.status_code != 302:
            raise RuntimeError(f"sign-in callback answered HTTP {done.status_code}")


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[80, 400, 1024], help="MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="repetitions of each transfer (default %(default)s)")
    p.add_argument("--requests", type=int, default=200, help="small API calls per path and round")
    args = p.parse_args()
    if args.short:
        args.sizes, args.rounds, args.requests = [4], 1, 10

    heading(
        "Jupyter `/mlflow/` proxy: ours vs MLflow direct vs jupyter-server-proxy",
        f"Artifacts of {', '.join(map(str, args.sizes))} MiB up (PUT) and down, {args.rounds} rounds alternated, "
        "medians; RSS: the Jupyter server's largest peak growth during one transfer.",
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-jupyter-proxy-"))
    servers: list[Jupyter] = []
    try:
        with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (_stack, endpoints):
            ours = Jupyter(workdir / "ours", endpoints, False)
            servers.append(ours)
            by_path = {"ours": ours}
            if HAVE_PEER:
                servers.append(by_path.setdefault("jupyter-server-proxy", Jupyter(workdir / "peer", endpoints, True)))
            for server in servers:
                server.start(extension_started=not server.peer)
            ours.sign_in(endpoints["users"][USER]["password"])
            bases = {"direct": endpoints["mlflow_upstream"], **{k: s.base for k, s in by_path.items()}}
            headers = {"direct": {}, **{k: {"Authorization": f"token {s.token}"} for k, s in by_path.items()}}
            started = {k: rss_mib(s.proc.pid) for k, s in by_path.items() if s.proc}

            rows = []
            for mib in args.sizes:
                expected = Payload.sha256(mib)

                def measure(path: str, mib: int = mib, expected: str = expected) -> tuple[Transfer, Transfer, float]:
                    url = artifact_url(bases[path], unique_name(f"{mib}-{path[:4]}"))
                    server = by_path.get(path)
                    pids = {"server": server.proc.pid} if server and server.proc else {}
                    with PeakRSS(pids) as rss:
                        up = upload(url, headers[path], mib)
                        down = download(url, headers[path], mib, expected) if up.mib_s else Transfer(None, "no upload")
                    return up, down, rss.growth("server") if pids else 0.0

                runs = interleaved(args.rounds, PATHS, measure)
                up = {k: median([r[0].mib_s for r in runs[k]]) for k in PATHS}
                down = {k: median([r[1].mib_s for r in runs[k]]) for k in PATHS}
                for k in PATHS:
                    problem_up = next((r[0].problem for r in runs[k] if r[0].problem), None)
                    problem_down = next((r[1].problem for r in runs[k] if r[1].problem), None)
                    growth = f"{max(r[2] for r in runs[k]):+.0f}" if k != "direct" else "-"
                    rows.append(
                        (mib, k, fmt(up[k], problem=problem_up), ratio(up[k], up["direct"]),
                         fmt(down[k], problem=problem_down), ratio(down[k], down["direct"]), growth)
                    )  # fmt: skip

            small = interleaved(
                args.rounds,
                PATHS,
                lambda k: latencies(f"{bases[k]}/api/2.0/mlflow/experiments/search?max_results=1", headers[k],
                                    args.requests),
            )  # fmt: skip
            small_rows = []
            for k in PATHS:
                values = [v for batch in small[k] for v in batch]
                small_rows.append((k, f"{1000 * percentile(values, 50):.1f}", f"{1000 * percentile(values, 99):.1f}"))
            p50 = {k: percentile([v for b in small[k] for v in b], 50) for k in PATHS}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # artifacts of every size

    print(table(("MiB", "path", "up MiB/s", "up vs direct", "down MiB/s", "down vs direct", "server RSS +MiB"), rows))
    idle = ", ".join(f"{k} {v:.0f} MiB" for k, v in started.items())
    print(f"\nJupyter server RSS when idle: {idle}." + ("" if HAVE_PEER else " (jupyter-server-proxy not installed:"
          " `pip install -e '.[bench]'`)") + "\n")  # fmt: skip
    print(table(("small calls", "p50 ms", "p99 ms"), small_rows))
    peer = f"; ours/jupyter-server-proxy: {p50['jupyter-server-proxy'] / p50['ours']:.2f}x" if HAVE_PEER else ""
    print(f"\nratio ours/direct, small calls (p50 latency direct/ours): {p50['direct'] / p50['ours']:.2f}x{peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
