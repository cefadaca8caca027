"""Our Jupyter `/mlflow/` proxy vs MLflow direct vs jupyter-server-proxy, interleaved in one run.

    .venv/bin/python bench/jupyter_proxy.py [--sizes 80 400 1024] [--rounds 7] [--requests 200] [--short]
                                            [--without-peer]

Needs the `bench` extra (jupyter-server-proxy). Starts its own local stack and TWO `jupyter server`s on free ports
(stopped by PID at the end), so one proxy's heap never hides the other's: one runs our extension (signed in as
alice through the IdP's own pages), the other jupyter-server-proxy with a named proxy. Both proxies go straight to
MLflow (not through nginx + gate: that is bench/proxy_overhead.py), so the proxy is the only difference from
direct. Each size goes up (PUT with a Content-Length) and down through all three, the order alternated every
round; median MiB/s, ratios to direct (with a 95% interval), CPU seconds per GiB of the client, the Jupyter server
and MLflow, the Jupyter server's peak RSS growth during a transfer, sha256 of every download. Then small API calls:
p50/p99 latency. A failed or truncated transfer shows as such.
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
    CpuPerGiB,
    PeakRSS,
    artifact_discarder,
    busy_machine,
    heading,
    local_stack,
    percentile,
    rss_mib,
    small_calls,
    table,
    transfer_args,
    transfer_rounds,
    up_and_down,
)

from stack.jupyter import JupyterProcess, extension_args, isolated_env, jupyter_argv
from stack.ports import free_port
from tests.support.idp_pages import authorize

PEER = "mlflow-peer"  # jupyter-server-proxy's named proxy, at {base_url}mlflow-peer/
USER = "alice"
# The peer is the `bench` extra (`./run bench` installs it); without it, ours is still measured against direct.
HAVE_PEER = importlib.util.find_spec("jupyter_server_proxy") is not None


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
    args = transfer_args(
        __doc__,
        sizes=[80, 400, 1024],
        requests=200,
        short_sizes=[4],
        rounds=7,
        extra=lambda p: p.add_argument(
            "--without-peer", action="store_true", help="ours vs direct only: quicker when tuning our proxy"
        ),
    )
    with_peer = HAVE_PEER and not args.without_peer
    paths = ("direct", "ours", "jupyter-server-proxy") if with_peer else ("direct", "ours")

    heading(
        "Jupyter `/mlflow/` proxy: ours vs MLflow direct vs jupyter-server-proxy"
        + (", busy machine" if args.busy else ""),
        f"Artifacts of {', '.join(map(str, args.sizes))} MiB up (PUT) and down, {args.rounds} rounds alternated, "
        "medians; vs direct: median over rounds of the ratio to the direct transfer of the same round (95% interval "
        "of that median); RSS: the Jupyter server's largest peak growth during one transfer."
        + (" Two CPU hogs (`python -c 'while 1: pass'`) ran throughout." if args.busy else ""),
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-jupyter-proxy-"))
    servers: list[Jupyter] = []
    try:
        with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (stack, endpoints), busy_machine(args.busy):
            mlflow_pid = stack.running()["mlflow"]["pid"]
            ours = Jupyter(workdir / "ours", endpoints, False)
            servers.append(ours)
            by_path = {"ours": ours}
            if with_peer:
                servers.append(by_path.setdefault("jupyter-server-proxy", Jupyter(workdir / "peer", endpoints, True)))
            for server in servers:
                server.start(extension_started=not server.peer)
            ours.sign_in(endpoints["users"][USER]["password"])
            bases = {"direct": endpoints["mlflow_upstream"], **{k: s.base for k, s in by_path.items()}}
            headers = {"direct": {}, **{k: {"Authorization": f"token {s.token}"} for k, s in by_path.items()}}
            started = {k: rss_mib(s.proc.pid) for k, s in by_path.items() if s.proc}
            discard = artifact_discarder(endpoints)  # a kept GiB artifact is written back during a later round

            rows, cpu_rows = [], []
            for mib in args.sizes:
                rss_growth: dict[str, list[float]] = {k: [] for k in paths}
                cpu = CpuPerGiB()

                def measure(path: str, mib: int = mib, rss_growth: dict = rss_growth, cpu: CpuPerGiB = cpu) -> tuple:
                    server = by_path.get(path)
                    pids = {"server": server.proc.pid} if server and server.proc else {}
                    counted = cpu.around(path, mib, {**pids, "mlflow": mlflow_pid})
                    with PeakRSS(pids) as rss:
                        up, down = up_and_down(bases[path], headers[path], mib, f"{mib}-{path[:4]}", counted, discard)
                    rss_growth[path].append(rss.growth("server") if pids else 0.0)
                    return up, down

                runs = transfer_rounds(args.rounds, paths, measure)
                for k in paths:
                    growth = f"{max(rss_growth[k]):+.0f}" if k != "direct" else "-"
                    up, down = (runs.versus(k, way, "direct") if k != "direct" else "1.00x" for way in (0, 1))
                    rows.append((mib, k, runs.cell(k, 0), up, runs.cell(k, 1), down, growth))
                    for index, way in enumerate(("up", "down")):
                        seconds = cpu.cells(k, way, ("client", "server", "mlflow", "total"))
                        if seconds and any(runs.rates(k, index)):  # a transfer that failed in every round moved nothing
                            cpu_rows.append((mib, k, way, *seconds))

            small = small_calls(args.rounds, bases, headers, args.requests)
            small_rows = [
                (k, f"{1000 * percentile(v, 50):.1f}", f"{1000 * percentile(v, 99):.1f}") for k, v in small.items()
            ]
            p50 = {k: percentile(v, 50) for k, v in small.items()}
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)  # artifacts of every size

    print(table(("MiB", "path", "up MiB/s", "up vs direct", "down MiB/s", "down vs direct", "server RSS +MiB"), rows))
    print("\nCPU seconds per GiB moved (median), by process:\n")
    print(table(("MiB", "path", "way", "client", "Jupyter server", "mlflow", "total"), cpu_rows))
    idle = ", ".join(f"{k} {v:.0f} MiB" for k, v in started.items())
    print(f"\nJupyter server RSS when idle: {idle}." + ("" if HAVE_PEER else " (jupyter-server-proxy not installed:"
          " `pip install -e '.[bench]'`)") + "\n")  # fmt: skip
    print(table(("small calls", "p50 ms", "p99 ms"), small_rows))
    peer = f"; ours/jupyter-server-proxy: {p50['jupyter-server-proxy'] / p50['ours']:.2f}x" if with_peer else ""
    print(f"\nratio ours/direct, small calls (p50 latency direct/ours): {p50['direct'] / p50['ours']:.2f}x{peer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
