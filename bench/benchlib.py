"""Shared pieces of the benchmarks: the stack, payloads, transfers, timing statistics, CPU and RSS, result tables."""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import itertools
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the scripts run as `python bench/<name>.py`: the project's packages by import
from stack.localstack import START_TIMEOUT, LocalStack  # noqa: E402
from stack.ports import HOST, free_port  # noqa: E402
from stack.processes import record, spawn, stop_group  # noqa: E402
from stack.waiting import wait_healthy  # noqa: E402

MIB = 1 << 20
_SEED = os.urandom(MIB)
_SEED2 = memoryview(_SEED * 2)


def parser(doc: str | None, *, busy: bool = False) -> argparse.ArgumentParser:
    """An argument parser with the suite's common `--short` flag (CI: tiny sizes, one round, still every path),
    and with `busy` its `--busy` flag (see `busy_machine`)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--short", action="store_true", help="tiny sizes and one round: proves the benchmark runs")
    if busy:
        p.add_argument(
            "--busy", action="store_true", help=f"measure with {HOGS} CPU hogs running (the charter's busy machine)"
        )
    return p


def transfer_args(
    doc: str | None,
    sizes: list[int],
    requests: int,
    short_sizes: list[int],
    rounds: int = 3,
    extra: Callable[[argparse.ArgumentParser], object] | None = None,
) -> argparse.Namespace:
    """The options of the proxy benchmarks: artifact sizes, rounds, small calls, `--busy`, `--short`, and those
    `extra` adds to the parser."""
    p = parser(doc, busy=True)
    if extra is not None:
        extra(p)
    p.add_argument("--sizes", type=int, nargs="+", default=sizes, help="MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=rounds, help="repetitions of each transfer (default %(default)s)")
    p.add_argument("--requests", type=int, default=requests, help="small API calls per path and round")
    args = p.parse_args()
    if args.short:
        args.sizes, args.rounds, args.requests = short_sizes, 1, 10
    return args


#: The charter's busy machine: this many `python -c 'while 1: pass'` beside what is measured.
HOGS = 2


@contextlib.contextmanager
def busy_machine(enabled: bool) -> Iterator[None]:
    """With `enabled`, HOGS busy-looping processes for the duration, each ended by its PID (also on failure)."""
    hogs: list[subprocess.Popen] = []
    try:
        for _ in range(HOGS if enabled else 0):
            hogs.append(subprocess.Popen([sys.executable, "-c", "while 1: pass"], stdin=subprocess.DEVNULL))
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


#: How nginx reaches MLflow in `local_stack`: "uds", its Unix socket, as shipped; "tcp", a loopback port.
UPSTREAMS = ("uds", "tcp")


@contextlib.contextmanager
def local_stack(
    env: dict[str, str] | None = None, prefix: str = "bench-stack-", upstream: str = "tcp"
) -> Iterator[tuple[LocalStack, dict]]:
    """The local stack (IdP, MLflow, gate, nginx) on free ports in a throwaway folder, stopped by PID at the end.

    "Direct" is `endpoints["mlflow_upstream"]`, an MLflow on a loopback port that clients reach without a token:
    - `upstream="tcp"`: the stack's MLflow itself listens there (STACK_MLFLOW_TCP), and nginx reaches it there too.
    - `upstream="uds"`: the stack as shipped, nginx reaching its MLflow over the Unix socket in the run folder;
      "direct" is a second MLflow started with the same command but a port (`LocalStack.mlflow_twin_command`:
      same app, workers, environment, backend store and artifact folder), its PID in
      `endpoints["mlflow_direct_pid"]`, stopped by that PID at the end, also when the benchmark fails.

    MLflow runs one uvicorn worker (both of them, with "uds"): with several, uvicorn's shared TCP socket is made
    without IPPROTO_TCP, asyncio then never sets TCP_NODELAY, and on every kept-alive connection the body of each
    response waits ~40 ms for the client's delayed ACK (a Unix socket never has this): that stall would be most of
    every small call's time, direct and proxied alike, and hide what the proxy costs. The stack's MLflow app now
    sets the option itself (stack/mlflow-identity/mlflow_oidc_identity/nodelay.py); one worker keeps runs
    comparable with bench/RESULTS.md, and one transfer is one connection, served by one worker either way.
    """
    if upstream not in UPSTREAMS:
        raise ValueError(f"upstream {upstream!r}: choose one of {', '.join(UPSTREAMS)}")
    env = {"STACK_MLFLOW_WORKERS": "1", **({"STACK_MLFLOW_TCP": "1"} if upstream == "tcp" else {}), **(env or {})}
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    stack = LocalStack(folder, env=env, log=lambda _m: None)
    twin: Service | None = None
    try:
        endpoints = stack.up(free_ports=True)
        if upstream == "uds":
            port = free_port()
            argv, twin_env = stack.mlflow_twin_command(port)
            twin = Service("mlflow-direct", argv, stack.layout.log("mlflow-direct"), twin_env, stack.layout.run_dir)
            twin.wait_ready(f"http://{HOST}:{port}/health", timeout=START_TIMEOUT["mlflow"])
            endpoints = {**endpoints, "mlflow_upstream": f"http://{HOST}:{port}", "mlflow_direct_pid": twin.pid}
        yield stack, endpoints
    finally:
        if twin is not None:
            twin.stop()
        stack.down()
        shutil.rmtree(folder, ignore_errors=True)  # gigabytes of artifacts


def bot_token(endpoints: dict) -> str:
    """An access token of the stack's ci-bot client (client credentials)."""
    bot = endpoints["clients"]["ci-bot"]
    meta = requests.get(f"{endpoints['issuer']}/.well-known/openid-configuration", timeout=10).json()
    response = requests.post(
        meta["token_endpoint"],
        data={"grant_type": "client_credentials"},
        auth=(bot["client_id"], bot["client_secret"]),
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


# ------------------------------------------------------------------------------------------ payloads and transfers


class Payload:
    """`mib` MiB of pseudo-random bytes as a file-like body with a length, as the MLflow client uploads a file.

    Every MiB is the same random MiB rotated by a different amount, so a lost, repeated or swapped block changes
    the digest; reading is nearly free (slices of one buffer), so the client's own cost stays small.
    """

    def __init__(self, mib: int) -> None:
        self.size = mib * MIB
        self._pos = 0

    def __len__(self) -> int:
        return self.size - self._pos

    def read(self, n: int | None = -1) -> memoryview | bytes:
        block, offset = divmod(self._pos, MIB)
        if block * MIB >= self.size:
            return b""
        n = min(MIB if n is None or n < 0 else n, MIB - offset)
        start = (block * 4099) % MIB + offset
        self._pos += n
        return _SEED2[start : start + n]

    @staticmethod
    @functools.lru_cache
    def sha256(mib: int) -> str:
        digest = hashlib.sha256()
        body = Payload(mib)
        while chunk := body.read(MIB):
            digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class Transfer:
    """One artifact transfer: MiB/s (None when it failed), and what went wrong."""

    mib_s: float | None
    problem: str | None = None


def artifact_url(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/bench/{name}"


def upload(url: str, headers: dict[str, str], mib: int) -> Transfer:
    """PUT `mib` MiB with a Content-Length, as `mlflow.log_artifact` does."""
    began = time.perf_counter()
    try:
        response = requests.put(url, data=Payload(mib), headers=headers, timeout=900)
    except requests.RequestException as exc:
        return Transfer(None, f"broke: {type(exc).__name__}")
    if response.status_code != 200:
        return Transfer(None, f"HTTP {response.status_code}")
    return Transfer(mib / (time.perf_counter() - began))


def download(url: str, headers: dict[str, str], mib: int, expected_sha256: str) -> Transfer:
    """GET the artifact streamed; a short, failed or different body is a problem, never a rate."""
    digest = hashlib.sha256()
    received = 0
    began = time.perf_counter()
    try:
        with requests.get(url, headers=headers, stream=True, timeout=900) as response:
            if response.status_code != 200:
                return Transfer(None, f"HTTP {response.status_code}")
            for block in response.iter_content(MIB):
                digest.update(block)
                received += len(block)
    except requests.RequestException as exc:
        return Transfer(None, f"broke: {type(exc).__name__}")
    seconds = time.perf_counter() - began
    if received != mib * MIB:
        return Transfer(None, f"truncated {received / MIB:.0f}/{mib} MiB")
    if digest.hexdigest() != expected_sha256:
        return Transfer(None, "bytes differ")
    return Transfer(mib / seconds)


def up_and_down(
    base: str,
    headers: dict[str, str],
    mib: int,
    stem: str,
    around: Callable[[str], contextlib.AbstractContextManager] = lambda _way: contextlib.nullcontext(),
    discard: Callable[[str], None] = lambda _name: None,
) -> tuple[Transfer, Transfer]:
    """Upload `mib` MiB as a new artifact under `base`, then download it and check it byte for byte; each
    transfer runs inside `around("up")` / `around("down")` (e.g. to count CPU seconds). An uploaded artifact is
    then given to `discard(name)` (e.g. `artifact_discarder`)."""
    name = unique_name(stem)
    url = artifact_url(base, name)
    with around("up"):
        up = upload(url, headers, mib)
    if not up.mib_s:
        return up, Transfer(None, "no upload")
    try:
        with around("down"):
            return up, download(url, headers, mib, Payload.sha256(mib))
    finally:
        discard(name)


def artifact_discarder(endpoints: dict) -> Callable[[str], None]:
    """Deletes an artifact `up_and_down` made from the stack's artifact folder once measured. Kept, 1 GiB
    artifacts stay dirty in the page cache, and the kernel writes each one to disk ~30 s later, in the middle of
    a later round: CPU and I/O that falls on whichever path that round measures."""
    folder = Path(endpoints["run_dir"]) / "artifacts" / "bench"

    def discard(name: str) -> None:
        (folder / name).unlink()  # it was uploaded: missing means this folder is not where MLflow keeps it

    return discard


@dataclass(frozen=True)
class TransferRounds:
    """Rounds of one upload + download per path: `runs[path][round] = (up, down)`."""

    runs: dict[str, list[tuple[Transfer, Transfer]]]

    def rates(self, path: str, way: int) -> list[float | None]:
        return [pair[way].mib_s for pair in self.runs[path]]

    def cell(self, path: str, way: int) -> str:
        """The median MiB/s (0 up, 1 down), with what went wrong in any round: never hidden behind the median."""
        found = sorted({problem for pair in self.runs[path] if (problem := pair[way].problem)})
        return fmt(median(self.rates(path, way)), problem=", ".join(found) or None)

    def versus(self, path: str, way: int, base: str) -> str:
        """`path` against `base`, round by round (see `paired_ratio`)."""
        return paired_ratio(self.rates(base, way), self.rates(path, way))


def transfer_rounds(
    rounds: int, paths: Sequence[str], measure: Callable[[str], tuple[Transfer, Transfer]]
) -> TransferRounds:
    """`measure(path)` (an `up_and_down`) for every path, `rounds` times, interleaved."""
    return TransferRounds(interleaved(rounds, paths, measure))


def latencies(url: str, headers: dict[str, str], count: int) -> list[float]:
    """Seconds per small GET on one kept-alive connection (after one warm-up call)."""
    out = []
    with requests.Session() as http:
        http.headers.update(headers)
        http.get(url, timeout=30).raise_for_status()
        for _ in range(count):
            began = time.perf_counter()
            http.get(url, timeout=30).raise_for_status()
            out.append(time.perf_counter() - began)
    return out


# ------------------------------------------------------------------------------------------ statistics


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that exist; None when none does (every attempt failed)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_interval(values: Sequence[float], draws: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of the median: how far another run's median may land from this one's."""
    rng = random.Random(16)  # noqa: S311 - resampling, not secrecy; seeded: the same data, the same interval
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def paired_ratio(base: Sequence[float | None], other: Sequence[float | None]) -> str:
    """The median over rounds of other/base, each pair measured back to back (a round's load falls on both),
    as `0.95x`, with the 95% bootstrap interval of that median from 3 rounds on (`0.95x (0.90-1.01)`): a goal
    inside the interval is within this run's noise. `-` when no round has both."""
    ratios = [o / b for b, o in zip(base, other, strict=True) if b and o is not None]
    if not ratios:
        return "-"
    if len(ratios) < 3:
        return f"{statistics.median(ratios):.2f}x"
    low, high = median_interval(ratios)
    return f"{statistics.median(ratios):.2f}x ({low:.2f}-{high:.2f})"


def small_calls(
    rounds: int, bases: dict[str, str], headers: dict[str, dict[str, str]], count: int
) -> dict[str, list[float]]:
    """Seconds per small API call (`GET experiments/search`) on each path, `rounds` interleaved batches of `count`."""
    batches = interleaved(
        rounds,
        list(bases),
        lambda path: latencies(f"{bases[path]}/api/2.0/mlflow/experiments/search?max_results=1", headers[path], count),
    )
    return {path: [v for batch in runs for v in batch] for path, runs in batches.items()}


def interleaved(rounds: int, labels: Sequence[str], measure: Callable[[str], object]) -> dict[str, list]:
    """Run `measure(label)` for every label, `rounds` times, reversing the order every round (ABBA...).

    On a machine shared with other work, load drifts: alternating the order gives every contender the same
    share of good and bad moments, so the ratio of medians is fair even when the absolute numbers are not.
    """
    results: dict[str, list] = {label: [] for label in labels}
    for index in range(rounds):
        for label in labels if index % 2 == 0 else list(reversed(labels)):
            results[label].append(measure(label))
    return results


# ------------------------------------------------------------------------------------------ processes


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (nginx workers, uvicorn workers)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss_mib(pid: int) -> float:
    """Resident memory of a process tree, in MiB."""
    total = 0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / MIB


def connections(pid: int, unix_path: str | None = None) -> dict[str, int]:
    """A process tree's established TCP connections ("tcp") and, with `unix_path`, its accepted connections on the
    Unix socket bound there ("unix"; Linux, from /proc/net/unix): e.g. over which nginx reaches MLflow, whose
    kept-alive upstream connections stay open between requests. Listening sockets never count."""
    counts = {"tcp": 0, "unix": 0}
    connected: set[str] = set()
    if unix_path is not None:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            fields = line.split()  # Num RefCount Protocol Flags Type St Inode Path; St 03: connected
            if len(fields) >= 8 and fields[7] == unix_path and fields[5] == "03":
                connected.add(fields[6])
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, OSError):
            counts["tcp"] += sum(c.status == psutil.CONN_ESTABLISHED for c in proc.net_connections(kind="tcp"))
            for fd in Path(f"/proc/{proc.pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    counts["unix"] += os.readlink(fd).removeprefix("socket:[").removesuffix("]") in connected
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process tree."""
    total = 0.0
    for proc in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


class CpuPerGiB:
    """CPU seconds per GiB moved, by process tree and for this client process, per (path, way, process), and
    their sum ("total"): when the cores are the limit, the wall-clock ratio of two paths follows that of totals.

    Robust on a shared machine: time spent waiting for a core is not counted, so it shows what a path costs even
    when the wall-clock ratio is mostly load from elsewhere.
    """

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str, str], list[float]] = {}

    def around(self, path: str, mib: int, pids: dict[str, int]) -> Callable[[str], contextlib.AbstractContextManager]:
        """For `up_and_down(..., around=...)`: counts the processes `pids` (name -> PID) and the client."""

        @contextlib.contextmanager
        def counted(way: str) -> Iterator[None]:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            client_before = time.process_time()
            yield
            spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            spent["client"] = time.process_time() - client_before
            spent["total"] = sum(spent.values())
            for name, seconds in spent.items():
                self.samples.setdefault((path, way, name), []).append(seconds * 1024 / mib)

        return counted

    def cells(self, path: str, way: str, names: Sequence[str]) -> list[str] | None:
        """Median CPU seconds per GiB of each of `names` (`-` for a process this path does not use)."""
        if (path, way, "client") not in self.samples:
            return None
        return [fmt(median(self.samples[key]), 2) if (key := (path, way, n)) in self.samples else "-" for n in names]


class PeakRSS:
    """The peak RSS (MiB) of process trees, sampled every 50 ms in a thread while inside the `with` block."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before = {name: rss_mib(pid) for name, pid in pids.items()}
        self.peak = dict(self.before)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self._take()

    def _take(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_mib(pid))

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._take()

    def growth(self, name: str) -> float:
        return self.peak[name] - self.before[name]


# ------------------------------------------------------------------------------------------ output


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (RESULTS.md is these tables, verbatim)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 0, problem: str | None = None) -> str:
    """The value, or what went wrong; a problem in some rounds shows beside the median of the others."""
    if value is None:
        return problem or "failed"
    return f"{value:.{digits}f}" + (f" (some rounds: {problem})" if problem else "")


_names = itertools.count()


def unique_name(stem: str) -> str:
    """An artifact name never used before in this run: replacing an artifact is a different (Admin) operation."""
    return f"{stem}-{os.getpid()}-{next(_names)}.bin"


def machine() -> str:
    """One line about where the numbers were taken: CPUs, memory, load, Python."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB RAM, load average {load}, "
        f"Python {platform.python_version()}"
    )


def heading(title: str, what: str) -> None:
    """Print a benchmark's section header (Markdown) with the load at its start."""
    print(
        f"\n## {title}\n\n{what}\n\nLoad average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n",
        flush=True,
    )


# ------------------------------------------------------------------------------------------ services


class Service:
    """One process the benchmark starts in its own group and ends by its PID (group), logging to a file."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.proc = spawn(argv, {**os.environ, **(env or {})}, log_path, cwd=cwd)
        self._record = record(self.proc.pid)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, expected: tuple[int, ...] = (200,), timeout: float = 60.0) -> None:
        """Poll `url` until it answers an `expected` status; fail with the log's tail if the process exits."""
        wait_healthy(
            self.name,
            url,
            running=lambda: self.proc.poll() is None,
            log_path=self.log_path,
            timeout=timeout,
            expected=expected,
        )

    def stop(self) -> None:
        stop_group(self._record)
        self.proc.wait()
