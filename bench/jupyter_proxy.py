"""Artifact downloads through our Jupyter `/mlflow/` proxy vs jupyter-server-proxy, side by side in one run.

    .venv/bin/python bench/jupyter_proxy.py [--sizes 80 150 400]

Needs the `bench` extra (jupyter-server-proxy). Starts its own local stack and ONE `jupyter server` on free ports
(both stopped by PID at the end). The server runs our extension (upstream: nginx + gate, signed in as alice through
the IdP's own pages) and jupyter-server-proxy with a named proxy straight to MLflow. Each artifact is uploaded to
MLflow directly, then downloaded through both: MiB/s, sha256 against the upload, and the server's RSS growth (peak
sampled every 50 ms during the download, minus the value before); ratio = ours/peer MiB/s. All of ours run first,
on a fresh server, so a heap the peer grew cannot hide our growth. A failed or truncated download shows as such.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

from stack.jupyter import JupyterProcess, extension_args, isolated_env, jupyter_argv
from stack.localstack import LocalStack
from stack.ports import free_port
from tests.support.idp_pages import authorize

CHUNK = 1 << 20
PEER = "mlflow-peer"  # jupyter-server-proxy's named proxy, at {base_url}mlflow-peer/
USER = "alice"


@dataclass
class Download:
    """One download: its rate (None when it failed), what went wrong, whether the bytes match, RSS growth."""

    mib_s: float | None
    problem: str | None
    identical: bool
    rss_mib: float
    peak_mib: float
    seconds: float
    detail: str = ""


def _blocks(mib: int) -> Iterator[bytes]:
    seed = os.urandom(CHUNK)
    for index in range(mib):
        yield seed[index % CHUNK :] + seed[: index % CHUNK]


def _upload(upstream: str, path: str, mib: int) -> str:
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for block in _blocks(mib):
            digest.update(block)
            yield block

    response = requests.put(f"{upstream}/api/2.0/mlflow-artifacts/artifacts/{path}", data=body(), timeout=600)
    response.raise_for_status()
    return digest.hexdigest()


def _error_text(page: str) -> str:
    """The message of a Jupyter error page (`<pre class="traceback">`), else the start of the body."""
    found = re.search(r'<pre class="traceback">(.*?)</pre>', page, re.DOTALL)
    return " ".join(html.unescape(found.group(1) if found else page).split())[:160]


class PeakRSS:
    """The peak RSS of one process, sampled in a background thread every 50 ms while in the `with` block."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.before = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / CHUNK


def _download(url: str, token: str, mib: int, expected: str, pid: int) -> Download:
    digest = hashlib.sha256()
    received = 0
    problem = None
    detail = ""
    with PeakRSS(pid) as rss:
        began = time.perf_counter()
        try:
            with requests.get(url, headers={"Authorization": f"token {token}"}, stream=True, timeout=600) as response:
                if response.status_code != 200:
                    problem = f"HTTP {response.status_code}"
                    detail = _error_text(response.text)
                else:
                    for block in response.iter_content(CHUNK):
                        digest.update(block)
                        received += len(block)
        except requests.RequestException as exc:
            problem = f"broke: {type(exc).__name__}"
            detail = str(exc)[:160]
        elapsed = time.perf_counter() - began
    if problem is None and received != mib * CHUNK:
        problem = f"truncated {received / CHUNK:.0f}/{mib} MiB"
    identical = problem is None and digest.hexdigest() == expected
    if problem is None and not identical:
        problem = "bytes differ"
    return Download(
        None if problem else mib / elapsed, problem, identical, rss.growth_mib, rss.peak / CHUNK, elapsed, detail
    )


class Jupyter(JupyterProcess):
    """One `jupyter server` with our extension and jupyter-server-proxy, in its own process group."""

    def __init__(self, workdir: Path, endpoints: dict) -> None:
        port, token = free_port(), os.urandom(16).hex()
        home, config, root = workdir / "home", workdir / "config", workdir / "root"
        for folder in (home, config, root):
            folder.mkdir()
        # jupyter-server-proxy's named proxies are configured in Python only (a dict of dicts); no command =
        # proxy to a server already running on localhost:<port>.
        extensions = {"mlflow_oidc_jupyter.server": True, "jupyter_server_proxy": True}
        servers = {
            PEER: {"port": int(endpoints["mlflow_upstream"].rsplit(":", 1)[1]), "launcher_entry": {"enabled": False}}
        }
        (config / "jupyter_server_config.py").write_text(
            "c = get_config()  # noqa: F821\n"
            f"c.ServerApp.jpserver_extensions = {extensions!r}\nc.ServerProxy.servers = {servers!r}\n"
        )
        super().__init__(
            jupyter_argv("jupyter_server", port=port, token=token, root_dir=root, extra=extension_args(endpoints)),
            # HOME and caches of its own: the sign-in lands in a throwaway token cache, never the user's.
            isolated_env(home, workdir / "runtime", JUPYTER_CONFIG_PATH=str(config)),
            workdir / "jupyter.log",
            f"http://127.0.0.1:{port}/",
            token,
        )

    def http(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"token {self.token}"
        return session

    def sign_in(self, password: str) -> None:
        """The server-side sign-in a browser would do, driven over HTTP through the IdP's login page."""
        http = self.http()
        start = http.get(self.url + "mlflow/oauth/login", allow_redirects=False, timeout=30)
        if start.status_code != 302:
            raise RuntimeError(f"sign-in did not start: HTTP {start.status_code}")
        done = http.get(authorize(start.headers["Location"], USER, password), allow_redirects=False, timeout=30)
        if done.status_code != 302:
            raise RuntimeError(f"sign-in callback answered HTTP {done.status_code}")


def _cell(result: Download) -> str:
    return f"{result.mib_s:.0f}" if result.mib_s is not None else result.problem or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[80, 150, 400], help="MiB (default %(default)s)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-jupyter-proxy-"))
    (workdir / "stack").mkdir()
    (workdir / "jupyter").mkdir()
    stack = LocalStack(workdir / "stack", env={"STACK_MLFLOW_TCP": "1"}, log=lambda _m: None)
    jupyter: Jupyter | None = None
    try:
        endpoints = stack.up(free_ports=True)
        jupyter = Jupyter(workdir / "jupyter", endpoints)
        jupyter.start()
        jupyter.sign_in(endpoints["users"][USER]["password"])
        assert jupyter.proc is not None
        pid = jupyter.proc.pid
        started_mib = psutil.Process(pid).memory_info().rss / CHUNK

        digests = {mib: _upload(endpoints["mlflow_upstream"], f"bench/{mib}.bin", mib) for mib in args.sizes}
        artifact = "api/2.0/mlflow-artifacts/artifacts/bench/{}.bin"
        ours = {mib: _download(jupyter.url + "mlflow/" + artifact.format(mib), jupyter.token, mib, digests[mib], pid)
                for mib in args.sizes}  # fmt: skip
        peer = {mib: _download(jupyter.url + f"{PEER}/" + artifact.format(mib), jupyter.token, mib, digests[mib], pid)
                for mib in args.sizes}  # fmt: skip

        print(f"\nours: {jupyter.url}mlflow/ -> nginx + gate -> MLflow (signed in as {USER});"
              f" peer: jupyter-server-proxy {jupyter.url}{PEER}/ -> MLflow directly\n")  # fmt: skip
        header = ("size MiB", "ours MiB/s", "peer MiB/s", "ratio", "ours RSS +MiB", "peer RSS +MiB",
                  "byte-identical ours/peer")  # fmt: skip
        print(" | ".join(header))
        for mib in args.sizes:
            a, b = ours[mib], peer[mib]
            ratio = f"{a.mib_s / b.mib_s:.2f}" if a.mib_s and b.mib_s else "-"
            same = f"{'yes' if a.identical else 'no'}/{'yes' if b.identical else 'no'}"
            cells = (str(mib), _cell(a), _cell(b), ratio, f"{a.rss_mib:.1f}", f"{b.rss_mib:.1f}", same)
            print(" | ".join(cell.rjust(len(title)) for cell, title in zip(cells, header, strict=True)))
        # Growth is against the RSS before each download: a heap an earlier download grew hides the next one's.
        print(f"\nserver RSS: {started_mib:.0f} MiB signed in; peak {max(r.peak_mib for r in ours.values()):.0f} MiB"
              f" during ours; peak {max(r.peak_mib for r in peer.values()):.0f} MiB during peer's")  # fmt: skip
        for mib, result in peer.items():
            if result.detail:
                print(f"peer {mib} MiB: {result.problem} after {result.seconds:.2f} s: {result.detail}")
    finally:
        if jupyter is not None:
            jupyter.stop()
        stack.down()
        shutil.rmtree(workdir, ignore_errors=True)  # artifacts of every size
    return 0


if __name__ == "__main__":
    sys.exit(main())
