"""What the identity-aware proxy costs: MLflow direct vs through nginx + gate, interleaved in one run.

    .venv/bin/python bench/proxy_overhead.py [--sizes 80 1024] [--rounds 3] [--requests 300] [--short]

Starts its own local stack on free ports (stopped at the end) and takes a ci-bot token. For each size, uploads
(PUT with a Content-Length, as `mlflow.log_artifact`) and downloads the artifact directly and through nginx + gate,
alternating which goes first every round; prints median MiB/s, the ratio proxy/direct, CPU seconds per GiB of each
process (robust when the machine is shared: it does not count time spent waiting for a core), and the peak RSS
growth of nginx and the gate. Then small API calls (p50/p99 latency). Every download is checked byte for byte.
"""

from __future__ import annotations

import sys
import time

from benchlib import (
    Payload,
    PeakRSS,
    Transfer,
    artifact_url,
    bot_token,
    cpu_seconds,
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
    table,
    unique_name,
    upload,
)

PATHS = ("direct", "nginx + gate")
COMPONENTS = ("client", "nginx", "gate", "mlflow")


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[80, 1024], help="MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="repetitions of each transfer (default %(default)s)")
    p.add_argument("--requests", type=int, default=300, help="small API calls per path and round")
    args = p.parse_args()
    if args.short:
        args.sizes, args.rounds, args.requests = [8], 1, 20

    heading(
        "Identity-aware proxy: MLflow direct vs through nginx + gate",
        f"Artifacts of {', '.join(map(str, args.sizes))} MiB up (PUT, Content-Length) and down, "
        f"{args.rounds} interleaved rounds, medians; small calls: `GET experiments/search`.",
    )
    # Long-lived tokens: one 1 GiB transfer under load can outlast the default 5 minutes.
    with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (stack, endpoints):
        running = stack.running()
        pids = {name: running[name]["pid"] for name in ("nginx", "gate", "mlflow")}
        headers = {"direct": {}, "nginx + gate": {"Authorization": f"Bearer {bot_token(endpoints)}"}}
        bases = {"direct": endpoints["mlflow_upstream"], "nginx + gate": endpoints["mlflow_url"]}

        rows, cpu_rows = [], []
        with PeakRSS(pids) as rss:
            for mib in args.sizes:
                expected = Payload.sha256(mib)
                cpu: dict[tuple[str, str, str], list[float]] = {}

                def measure(path: str, mib: int = mib, expected: str = expected, cpu: dict = cpu) -> tuple:
                    url = artifact_url(bases[path], unique_name(f"{mib}-{path.split()[0]}"))
                    results = []
                    for way in ("up", "down"):
                        before = {n: cpu_seconds(pid) for n, pid in pids.items()}
                        client_before = time.process_time()
                        if way == "up":
                            result = upload(url, headers[path], mib)
                        else:
                            result = download(url, headers[path], mib, expected)
                        spent = {n: cpu_seconds(pid) - before[n] for n, pid in pids.items()}
                        spent["client"] = time.process_time() - client_before
                        for name, seconds in spent.items():
                            cpu.setdefault((path, way, name), []).append(seconds * 1024 / mib)
                        results.append(result)
                    return tuple(results)

                runs = interleaved(args.rounds, PATHS, measure)
                up = {path: median([t[0].mib_s for t in runs[path]]) for path in PATHS}
                down = {path: median([t[1].mib_s for t in runs[path]]) for path in PATHS}
                for path in PATHS:
                    cells = (
                        fmt(up[path], problem=_problems(runs[path], 0)),
                        fmt(down[path], problem=_problems(runs[path], 1)),
                    )
                    rows.append((mib, path, *cells))
                rows.append(
                    (
                        mib,
                        "**ratio proxy/direct**",
                        ratio(up[PATHS[1]], up[PATHS[0]]),
                        ratio(down[PATHS[1]], down[PATHS[0]]),
                    )
                )
                for path in PATHS:
                    for way in ("up", "down"):
                        cells = [fmt(median(cpu[(path, way, n)]), 2) for n in COMPONENTS if (path, way, n) in cpu]
                        cpu_rows.append((mib, path, way, *cells))

        small = interleaved(
            args.rounds,
            PATHS,
            lambda path: latencies(
                f"{bases[path]}/api/2.0/mlflow/experiments/search?max_results=1", headers[path], args.requests
            ),
        )
        small_rows = []
        for path in PATHS:
            values = [v for batch in small[path] for v in batch]
            small_rows.append(
                (
                    path,
                    f"{len(values) / sum(values):.0f}",
                    f"{1000 * percentile(values, 50):.1f}",
                    f"{1000 * percentile(values, 99):.1f}",
                )
            )
        direct_p50, proxy_p50 = (percentile([v for b in small[p] for v in b], 50) for p in PATHS)

    print(table(("MiB", "path", "upload MiB/s", "download MiB/s"), rows))
    print("\nCPU seconds per GiB moved (median), by process:\n")
    print(table(("MiB", "path", "way", *COMPONENTS), cpu_rows))
    print(
        f"\nPeak RSS growth over all transfers: nginx {rss.growth('nginx'):+.1f} MiB "
        f"(from {rss.before['nginx']:.0f}), gate {rss.growth('gate'):+.1f} MiB (from {rss.before['gate']:.0f}); "
        "every download byte-identical unless a cell says otherwise; MLflow (server and workers) "
        f"{rss.growth('mlflow'):+.0f} MiB.\n"
    )
    print(table(("small calls", "calls/s", "p50 ms", "p99 ms"), small_rows))
    print(f"\nratio proxy/direct, small calls (p50 latency direct/proxy): {direct_p50 / proxy_p50:.2f}x")
    return 0


def _problems(results: list[tuple[Transfer, Transfer]], way: int) -> str | None:
    """What went wrong in any round, one way (0 up, 1 down); never hidden behind the other rounds' median."""
    found = sorted({pair[way].problem for pair in results if pair[way].problem})  # type: ignore[misc]
    return ", ".join(found) or None


if __name__ == "__main__":
    sys.exit(main())
