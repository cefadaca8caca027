"""Run every benchmark, one after the other, and write their tables to bench/RESULTS.md (`./run bench`).

    .venv/bin/python bench/run_all.py [--short] [--output bench/RESULTS.md] [name ...]

Each benchmark is its own script and process (its own stack on free ports); its Markdown output goes into the
results file as it is, under a header with the date, the machine, the load and the commit. A benchmark that fails
is recorded as failed (with the end of its error output) and the others still run; the exit status says so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import ROOT, machine

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "proxy_overhead",
    "jupyter_proxy",
    "gate_throughput",
    "client_overhead",
    "refresh_efficiency",
    "signin_latency",
)
#: Benchmarks run more than once, with these options each time (the charter's busy machine as well as today's;
#: nginx reaching MLflow over its socket as shipped, and over loopback TCP as measured before, side by side).
VARIANTS = {"proxy_overhead": ([], ["--busy"], ["--upstream", "tcp"], ["--upstream", "tcp", "--busy"])}


def run(name: str, short: bool, options: list[str]) -> tuple[str, bool, float]:
    """The benchmark's stdout (or why it failed), whether it succeeded, and how long it took."""
    began = time.monotonic()
    argv = [sys.executable, str(HERE / f"{name}.py"), *options, *(["--short"] if short else [])]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return f"{done.stdout}\n\n**{name} failed (exit {done.returncode})**:\n\n```\n{tail}\n```\n", False, seconds
    return done.stdout, True, seconds


def _commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return found.stdout.strip() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"only these of {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--short", action="store_true", help="every benchmark in its short mode (CI)")
    p.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="default %(default)s")
    args = p.parse_args()
    names = args.names or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    started = datetime.datetime.now(datetime.timezone.utc)
    header = [
        "# Benchmark results",
        "",
        f"Written by `./run bench{' --short' if args.short else ''}` on {started:%Y-%m-%d %H:%M} UTC at commit "
        f"{_commit()}.",
        f"Machine: {machine()} (at the start).",
        "",
        "Ratios come from contenders measured in the same run, alternating, medians of repetitions: they hold when"
        " the machine is shared; absolute figures do not. Each section gives the load average when it started.",
    ]
    sections, failed = [], []
    for name in names:
        for options in VARIANTS.get(name, ([],)):
            label = " ".join([name, *options])
            print(f"==> {label}", file=sys.stderr, flush=True)
            text, ok, seconds = run(name, args.short, options)
            sections.append(f"{text.strip()}\n\n_{label}: {seconds:.0f} s_\n")
            if not ok:
                failed.append(label)
            print(text, flush=True)
    footer = f"Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}."
    args.output.write_text("\n".join(header) + "\n\n" + "\n".join(sections) + "\n" + footer + "\n")
    print(f"wrote {args.output}" + (f"; failed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
