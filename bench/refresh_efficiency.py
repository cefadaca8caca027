"""Token refresh efficiency: calls to the token endpoint vs the ideal, 4 processes x 16 threads, 5 s tokens.

    .venv/bin/python bench/refresh_efficiency.py [--processes 4] [--threads 16] [--seconds 60] [--short]

Starts its own local stack with IDP_ACCESS_TOKEN_TTL=5 and signs bob in once (device flow, approved on the IdP's
pages) into a token cache in a throwaway folder. Then the processes, each with its own `Session` on that shared
cache, run their threads for --seconds: each thread asks `access_token()` and has the gate check the token (a
real validation, at most every 100 ms per thread). Counted: refresh grants at the IdP (from its log), refreshes
per process, tokens the gate refused, errors. Ideal: one refresh per (lifetime - refresh margin) for everybody
together, since the processes share the cache and rotating refresh tokens allow only one live refresher.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from benchlib import heading, local_stack, parser, table

from mlflow_oidc_jupyter.oidc.session import Session
from mlflow_oidc_jupyter.settings import Settings
from tests.support.idp_pages import approve_device

TTL = 5
USER = "bob"


def _worker(threads: int, seconds: float, check_url: str, out: multiprocessing.Queue) -> None:
    """One process: a Session on the shared cache, `threads` threads using it for `seconds`."""
    started = time.time()
    session = Session(Settings.load())
    if not session.load_cached():
        out.put({"error": "no cached sign-in"})
        return
    counts = {"calls": 0, "refused": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run() -> None:
        http = requests.Session()
        while time.monotonic() < deadline:
            try:
                token = session.access_token()
                status = http.get(check_url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code
                with lock:
                    counts["calls"] += 1
                    counts["refused"] += status != 204
            except Exception:  # noqa: BLE001  (counted: any failure to hand out a usable token)
                with lock:
                    counts["errors"] += 1
            time.sleep(0.1)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put({**counts, "started": started, "ended": time.time(), "refreshes": session.refresh_count,
             "adopted": session.adopted_count, "failures": session.refresh_failures})  # fmt: skip
    session.close()


def _refresh_grants(idp_log: Path) -> int:
    return sum("grant_type=refresh_token" in line for line in idp_log.read_text().splitlines())


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60.0, help="how long the threads run (default %(default)s)")
    args = p.parse_args()
    if args.short:
        args.processes, args.threads, args.seconds = 2, 2, 6.0

    heading(
        "Token refresh efficiency",
        f"{args.processes} processes x {args.threads} threads sharing one sign-in for {args.seconds:g} s, "
        f"access tokens of {TTL} s.",
    )
    with local_stack({"IDP_ACCESS_TOKEN_TTL": str(TTL)}) as (stack, endpoints):
        os.environ.update(
            MLFLOW_OIDC_ISSUER=endpoints["issuer"],
            MLFLOW_OIDC_CLIENT_ID=endpoints["clients"]["jupyter"]["client_id"],
            MLFLOW_OIDC_AUDIENCE=endpoints["audience"],
            MLFLOW_OIDC_CACHE_DIR=tempfile.mkdtemp(prefix="bench-refresh-cache-"),
            MLFLOW_TRACKING_URI=endpoints["mlflow_url"],
        )
        signer = Session(Settings.load(), background_refresh=False)
        password = endpoints["users"][USER]["password"]
        approver = None

        def on_prompt(device) -> None:  # type: ignore[no-untyped-def]
            nonlocal approver
            approver = threading.Thread(target=approve_device, args=(device.verification_uri_complete, USER, password))
            approver.start()

        signer.login_device(on_prompt)
        if approver is not None:
            approver.join()
        signer.close()
        margin = min(signer.settings.refresh_margin, 0.25 * TTL)

        idp_log = Path(stack.layout.log("idp"))
        before = _refresh_grants(idp_log)
        check_url = f"{endpoints['gate_url']}/check"
        out: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_worker, args=(args.threads, args.seconds, check_url, out))
                   for _ in range(args.processes)]  # fmt: skip
        for worker in workers:
            worker.start()
        results = [out.get(timeout=args.seconds + 120) for _ in workers]
        for worker in workers:
            worker.join()
        grants = _refresh_grants(idp_log) - before

    if any("error" in r for r in results):
        print(f"a worker could not start: {json.dumps(results)}")
        return 1
    # From the first session loaded to the last one closed: the span in which somebody needed a fresh token.
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
    ideal = elapsed / (TTL - margin)
    rows = [(i + 1, r["calls"], r["refreshes"], r["adopted"], r["refused"], r["errors"] + r["failures"])
            for i, r in enumerate(results)]  # fmt: skip
    print(table(("process", "token uses", "refreshes made", "refreshes adopted", "gate refused", "errors"), rows))
    print(f"\nrefresh grants at the IdP: {grants} in {elapsed:.1f} s; ideal {ideal:.1f} (one per {TTL - margin:g} s: "
          f"{TTL} s tokens, refreshed {margin:g} s before expiry); ratio actual/ideal {grants / ideal:.2f}x "
          "(goal <= 1.05x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
