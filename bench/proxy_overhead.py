"""What the identity-aware proxy costs: MLflow direct vs through nginx + gate, side by side in one run.

    .venv/bin/python bench/proxy_overhead.py [--mib 1024] [--requests 500]

Starts its own local stack on free ports (stopped at the end), takes a token by client credentials, then measures
small API calls (requests/s) and one large artifact up and down (MiB/s, byte-identical check), and nginx's RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

from stack.localstack import LocalStack

CHUNK = 1 << 20


def _token(endpoints: dict) -> str:
    bot = endpoints["clients"]["ci-bot"]
    meta = requests.get(f"{endpoints['issuer']}/.well-known/openid-configuration", timeout=10).json()
    response = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials"},
                             auth=(bot["client_id"], bot["client_secret"]), timeout=10)  # fmt: skip
    response.raise_for_status()
    return response.json()["access_token"]


def _api_rate(base: str, headers: dict, count: int) -> float:
    with requests.Session() as http:
        http.headers.update(headers)
        url = f"{base}/api/2.0/mlflow/experiments/search"
        http.get(url, params={"max_results": 1}, timeout=10).raise_for_status()
        began = time.perf_counter()
        for _ in range(count):
            http.get(url, params={"max_results": 1}, timeout=10).raise_for_status()
        return count / (time.perf_counter() - began)


def _blocks(mib: int):
    seed = os.urandom(CHUNK)
    for index in range(mib):
        yield seed[index % CHUNK :] + seed[: index % CHUNK]


def _upload(base: str, headers: dict, path: str, mib: int) -> tuple[float, str]:
    digest = hashlib.sha256()

    def body():
        for block in _blocks(mib):
            digest.update(block)
            yield block

    began = time.perf_counter()
    response = requests.put(f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}", data=body(), headers=headers,
                            timeout=600)  # fmt: skip
    response.raise_for_status()
    return mib / (time.perf_counter() - began), digest.hexdigest()


def _download(base: str, headers: dict, path: str, mib: int) -> tuple[float, str]:
    digest = hashlib.sha256()
    began = time.perf_counter()
    with requests.get(f"{base}/api/2.0/mlflow-artifacts/artifacts/{path}", headers=headers, stream=True,
                      timeout=600) as response:  # fmt: skip
        response.raise_for_status()
        for block in response.iter_content(CHUNK):
            digest.update(block)
    return mib / (time.perf_counter() - began), digest.hexdigest()


def _rss_mib(pid: int) -> float:
    group = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
    return sum(p.memory_info().rss for p in group) / CHUNK


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="artifact size in MiB (default %(default)s)")
    parser.add_argument("--requests", type=int, default=500, help="small API calls per path (default %(default)s)")
    args = parser.parse_args()

    # MLflow on a TCP port: the "direct (no auth)" path measures it without the proxy.
    tcp = {"STACK_MLFLOW_TCP": "1"}
    stack = LocalStack(Path(tempfile.mkdtemp(prefix="bench-stack-")), env=tcp, log=lambda _m: None)
    endpoints = stack.up(free_ports=True)
    try:
        token = _token(endpoints)
        nginx_pid = stack.running()["nginx"]["pid"]
        paths = {
            "direct (no auth)": (endpoints["mlflow_upstream"], {}),
            "nginx + gate": (endpoints["mlflow_url"], {"Authorization": f"Bearer {token}"}),
        }
        rows = []
        for label, (base, headers) in paths.items():
            rate = _api_rate(base, headers, args.requests)
            name = f"bench/{label.split()[0]}.bin"
            rss_before = _rss_mib(nginx_pid)
            up, sent = _upload(base, headers, name, args.mib)
            down, got = _download(base, headers, name, args.mib)
            rss_after = _rss_mib(nginx_pid)
            assert sent == got, f"{label}: the artifact came back different"
            rows.append((label, rate, up, down, rss_after - rss_before))
        print(f"\nstack started in {endpoints['started_in_seconds']} s; artifact {args.mib} MiB, byte-identical\n")
        print(f"{'path':18} {'API calls/s':>12} {'upload MiB/s':>13} {'download MiB/s':>15} {'nginx RSS +MiB':>15}")
        for label, rate, up, down, rss in rows:
            print(f"{label:18} {rate:12.0f} {up:13.0f} {down:15.0f} {rss:15.1f}")
        (_, r0, u0, d0, _), (_, r1, u1, d1, _) = rows
        print(f"{'ratio proxy/direct':18} {r1 / r0:12.2f} {u1 / u0:13.2f} {d1 / d0:15.2f}")
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
