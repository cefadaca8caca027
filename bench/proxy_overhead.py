"""What the identity-aware proxy costs: MLflow direct vs through nginx + gate, interleaved in one run.

    .venv/bin/python bench/proxy_overhead.py [--sizes 80 1024] [--rounds 7] [--requests 300] [--busy] [--short]

Starts its own local stack on free ports (stopped at the end) and takes a ci-bot token. For each size, uploads
(PUT with a Content-Length, as `mlflow.log_artifact`) and downloads the artifact directly and through nginx + gate,
alternating which goes first every round; prints median MiB/s, the ratio proxy/direct (median over rounds of the
two transfers made back to back, so load that drifts falls on both), CPU seconds per GiB of each
process (robust when the machine is shared: it does not count time spent waiting for a core), and the peak RSS
growth of nginx and the gate. Then small API calls (p50/p99 latency). Every download is checked byte for byte.
`--busy`: the same with the charter's busy machine, two CPU hogs started before and ended (by PID) after.
"""

from __future__ import annotations

import sys

from benchlib import (
    CpuPerGiB,
    PeakRSS,
    artifact_discarder,
    bot_token,
    busy_machine,
    heading,
    local_stack,
    percentile,
    small_calls,
    table,
    transfer_args,
    transfer_rounds,
    up_and_down,
)

PATHS = ("direct", "nginx + gate")
COMPONENTS = ("client", "nginx", "gate", "mlflow")


def main() -> int:
    # 7 rounds: with 5, one disturbed round moved the median ratio by up to 0.2x.
    args = transfer_args(__doc__, sizes=[80, 1024], requests=300, short_sizes=[8], rounds=7)

    heading(
        "Identity-aware proxy: MLflow direct vs through nginx + gate" + (", busy machine" if args.busy else ""),
        f"Artifacts of {', '.join(map(str, args.sizes))} MiB up (PUT, Content-Length) and down, "
        f"{args.rounds} interleaved rounds, medians; ratio: median over rounds of proxy/direct measured back to "
        "back; small calls: `GET experiments/search`."
        + (" Two CPU hogs (`python -c 'while 1: pass'`) ran throughout." if args.busy else ""),
    )
    # Long-lived tokens: one 1 GiB transfer under load can outlast the default 5 minutes.
    # The hogs start once the stack is up, and everything measured runs beside them.
    with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (stack, endpoints), busy_machine(args.busy):
        running = stack.running()
        pids = {name: running[name]["pid"] for name in ("nginx", "gate", "mlflow")}
        headers = {"direct": {}, "nginx + gate": {"Authorization": f"Bearer {bot_token(endpoints)}"}}
        bases = {"direct": endpoints["mlflow_upstream"], "nginx + gate": endpoints["mlflow_url"]}
        discard = artifact_discarder(endpoints)

        rows, cpu_rows = [], []
        with PeakRSS(pids) as rss:
            for mib in args.sizes:
                cpu = CpuPerGiB()

                def measure(path: str, mib: int = mib, cpu: CpuPerGiB = cpu) -> tuple:
                    counted = cpu.around(path, mib, pids)
                    return up_and_down(bases[path], headers[path], mib, f"{mib}-{path[:4]}", counted, discard)

                runs = transfer_rounds(args.rounds, PATHS, measure)
                for way, index in (("up", 0), ("down", 1)):
                    cells = [runs.cell(path, index) for path in PATHS]
                    rows.append((mib, way, *cells, runs.versus(PATHS[1], index, PATHS[0])))
                for path in PATHS:
                    for way in ("up", "down"):
                        if seconds := cpu.cells(path, way, (*COMPONENTS, "total")):
                            cpu_rows.append((mib, path, way, *seconds))

        small = small_calls(args.rounds, bases, headers, args.requests)
        small_rows = [
            (path, f"{len(v) / sum(v):.0f}", f"{1000 * percentile(v, 50):.1f}", f"{1000 * percentile(v, 99):.1f}")
            for path, v in small.items()
        ]
        direct_p50, proxy_p50 = (percentile(small[path], 50) for path in PATHS)

    print(table(("MiB", "way", "direct MiB/s", "nginx + gate MiB/s", "**ratio proxy/direct**"), rows))
    print("\nCPU seconds per GiB moved (median), by process:\n")
    print(table(("MiB", "path", "way", *COMPONENTS, "total"), cpu_rows))
    print(
        f"\nPeak RSS growth over all transfers: nginx {rss.growth('nginx'):+.1f} MiB "
        f"(from {rss.before['nginx']:.0f}), gate {rss.growth('gate'):+.1f} MiB (from {rss.before['gate']:.0f}); "
        "every download byte-identical unless a cell says otherwise; MLflow (server and workers) "
        f"{rss.growth('mlflow'):+.0f} MiB.\n"
    )
    print(table(("small calls", "calls/s", "p50 ms", "p99 ms"), small_rows))
    print(f"\nratio proxy/direct, small calls (p50 latency direct/proxy): {direct_p50 / proxy_p50:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
