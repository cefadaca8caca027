"""Every benchmark keeps working: `./run bench --short` per benchmark, through bench/run_all.py (never timed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each benchmark must print to be of any use: its comparison, whatever the numbers.
PRINTS = {
    "proxy_overhead": ["ratio proxy/direct", "CPU seconds per GiB", "Peak RSS growth"],
    "jupyter_proxy": ["up vs direct", "ratio ours/direct"],
    "gate_throughput": ["ratio gate/no-auth", "ratio gate/introspection"],
    "client_overhead": ["ratio oidc/static"],
    "refresh_efficiency": ["ratio actual/ideal", "refresh grants at the IdP"],
    "signin_latency": ["device: approval -> first metric logged", "browser: oauth/callback -> MLflow UI rendered"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRINTS))
def test_benchmark_runs_in_short_mode_and_reports_its_comparison(name: str, tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"

    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--short", "--output", str(results), name],
        capture_output=True, text=True, cwd=ROOT, timeout=540, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = results.read_text()
    assert written.startswith("# Benchmark results")
    assert "Machine:" in written and "Load average at start:" in written
    for expected in PRINTS[name]:
        assert expected in written, f"{name} did not print {expected!r}:\n{written}"
    assert "| failed" not in written and "HTTP " not in written, written
