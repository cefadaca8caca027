"""What the identity-aware proxy costs: MLflow direct vs through nginx + gate, interleaved in one run.

    .venv/bin/python bench/proxy_overhead.py [--sizes 80 1024] [--rounds 7] [--requests 300] [--busy]
                                             [--upstream uds|tcp] [--short]

Starts its own local stack on free ports (stopped at the end) and takes a ci-bot token. For each size, uploads
(PUT with a Content-Length, as `mlflow.log_artifact`) and downloads the artifact directly and through nginx + gate,
alternating which goes first every round; prints median MiB/s, the ratio proxy/direct (median over rounds of the
two transfers made back to back, so load that drifts falls on both), CPU seconds per GiB of each
process (robust when the machine is shared: it does not count time spent waiting for a core), and the peak RSS
growth of nginx and the gate. Then small API calls (p50/p99 latency). Every download is checked byte for byte.
`--busy`: the same with the charter's busy machine, two CPU hogs started before and ended (by PID) after.

`--upstream uds` (default) measures the stack as shipped: nginx reaches MLflow over its Unix socket in the run
folder, as `stack/run up` and the demo start it. "Direct" is then a second `mlflow server` started with the
stack's own command (`LocalStack.mlflow_twin_command`: the same app, uvicorn worker, environment, SQLite store and
artifact folder) on a loopback port, and ended by its PID. So both paths run identical server code and settings;
the only difference is the hop (client -TCP-> MLflow against client -TCP-> nginx -socket-> MLflow), and each
path's CPU counts its own MLflow. Not one MLflow on both: `mlflow server` starts uvicorn's command line, which
binds one socket (`--uds` or `--host/--port`); two need uvicorn started from our own code, no longer what ships.
`--upstream tcp`: the earlier set-up, one MLflow on a loopback port that nginx reaches over TCP too.

What differs between the two hops (perf syscall counts, one 1 GiB upload, 2026-11-30): a Unix stream socket holds
only what the *sending* socket's SO_SNDBUF allows, Linux's net.core.wmem_default (212992: 219264 bytes in flight),
and nginx sets no buffer size on upstream connections. So nginx writes an upload to MLflow 214 KiB at a time
(~8000 writev, ~3500 of them EAGAIN, per GiB) and MLflow reads 214 KiB at a time; over loopback TCP the buffer grows
to MiBs (~2150 writev of ~740 KiB, ~520 EAGAIN). Each refill waits for nginx and MLflow to be scheduled: little cost
on a quiet machine, but beside two CPU hogs uploads fell to 0.81-0.86x over the socket against 1.08x over TCP. In
exchange MLflow spends no more CPU per GiB behind nginx than direct (over TCP: 5-12% more).
"""

from __future__ import annotations

import sys

from benchlib import (
    UPSTREAMS,
    CpuPerGiB,
    PeakRSS,
    artifact_discarder,
    bot_token,
    busy_machine,
    connections,
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
    args = transfer_args(
        __doc__,
        sizes=[80, 1024],
        requests=300,
        short_sizes=[8],
        rounds=7,
        extra=lambda p: p.add_argument(
            "--upstream", choices=UPSTREAMS, default="uds", help="how nginx reaches MLflow (default %(default)s)"
        ),
    )
    hop = {"uds": "nginx -> MLflow over its Unix socket, as shipped", "tcp": "nginx -> MLflow over loopback TCP"}

    heading(
        "Identity-aware proxy: MLflow direct vs through nginx + gate"
        + (", busy machine" if args.busy else "")
        + (", TCP upstream" if args.upstream == "tcp" else ""),
        f"Artifacts of {', '.join(map(str, args.sizes))} MiB up (PUT, Content-Length) and down, "
        f"{args.rounds} interleaved rounds, medians; ratio: median over rounds of proxy/direct measured back to "
        f"back; small calls: `GET experiments/search`. {hop[args.upstream]}; direct: "
        + ("a second MLflow of the same command on a loopback port." if args.upstream == "uds" else "the same MLflow.")
        + (" Two CPU hogs (`python -c 'while 1: pass'`) ran throughout." if args.busy else ""),
    )
    # Long-lived tokens: one 1 GiB transfer under load can outlast the default 5 minutes.
    # The hogs start once the stack is up, and everything measured runs beside them.
    env = {"IDP_ACCESS_TOKEN_TTL": "3600"}
    with local_stack(env, upstream=args.upstream) as (stack, endpoints), busy_machine(args.busy):
        running = stack.running()
        served = {name: running[name]["pid"] for name in ("nginx", "gate", "mlflow")}
        # Each path counts the MLflow that serves it (with "tcp" both are the stack's).
        direct_mlflow = endpoints.get("mlflow_direct_pid", served["mlflow"])
        pids = {"direct": {**served, "mlflow": direct_mlflow}, "nginx + gate": served}
        headers = {"direct": {}, "nginx + gate": {"Authorization": f"Bearer {bot_token(endpoints)}"}}
        bases = {"direct": endpoints["mlflow_upstream"], "nginx + gate": endpoints["mlflow_url"]}
        discard = artifact_discarder(endpoints)

        rows, cpu_rows = [], []
        watched = {**served, **({"direct mlflow": direct_mlflow} if direct_mlflow != served["mlflow"] else {})}
        with PeakRSS(watched) as rss:
            for mib in args.sizes:
                cpu = CpuPerGiB()

                def measure(path: str, mib: int = mib, cpu: CpuPerGiB = cpu) -> tuple:
                    counted = cpu.around(path, mib, pids[path])
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
        # What nginx really used: its upstream connections stay open (keepalive) after the last call.
        hop_seen = connections(served["mlflow"], endpoints.get("mlflow_socket"))

    print(table(("MiB", "way", "direct MiB/s", "nginx + gate MiB/s", "**ratio proxy/direct**"), rows))
    print("\nCPU seconds per GiB moved (median), by process:\n")
    print(table(("MiB", "path", "way", *COMPONENTS, "total"), cpu_rows))
    print(
        f"\nPeak RSS growth over all transfers: nginx {rss.growth('nginx'):+.1f} MiB "
        f"(from {rss.before['nginx']:.0f}), gate {rss.growth('gate'):+.1f} MiB (from {rss.before['gate']:.0f}); "
        "every download byte-identical unless a cell says otherwise; MLflow (server and workers) "
        + (
            f"behind nginx {rss.growth('mlflow'):+.0f} MiB, direct {rss.growth('direct mlflow'):+.0f} MiB.\n"
            if "direct mlflow" in watched
            else f"{rss.growth('mlflow'):+.0f} MiB.\n"
        )
    )
    print(
        f"nginx's open connections to the MLflow behind it at the end: {hop_seen['unix']} on its Unix socket, "
        f"{hop_seen['tcp']} over TCP.\n"
    )
    print(table(("small calls", "calls/s", "p50 ms", "p99 ms"), small_rows))
    print(f"\nratio proxy/direct, small calls (p50 latency direct/proxy): {direct_p50 / proxy_p50:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
