"""What the MLflow plugin costs a client: MLFLOW_TRACKING_AUTH=oidc vs a static MLFLOW_TRACKING_TOKEN.

    .venv/bin/python bench/client_overhead.py [--calls 600] [--baseline REV] [--short]

Starts its own local stack; both ways sign in as ci-bot (client credentials) and log metrics to one run through
nginx + gate with `MlflowClient.log_metric`. MLflow reads the auth settings on every request, so the ways take
turns call by call in one process (order reversed every turn): load that drifts, even within seconds, falls on
both alike. The figure is the median over back-to-back pairs of their time ratio, with a bootstrap 95% interval
that says whether a gap is a reading or noise. `--baseline REV` adds the plugin as it was at git
revision REV as a third way (before/after in one run). Also the plugin's own CPU per request, timed in-process
without the network: the part of the gap the plugin can cause at all.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from types import ModuleType

import requests
from benchlib import ROOT, bot_token, heading, interleaved, local_stack, median_interval, parser, percentile, table

from mlflow_oidc_jupyter.oidc.default import set_default_session
from mlflow_oidc_jupyter.oidc.session import Session
from mlflow_oidc_jupyter.settings import Settings

STATIC, PLUGIN = "static token", "oidc plugin"
BASELINE_AUTH = "oidc-baseline"  # the MLFLOW_TRACKING_AUTH name of the plugin loaded from --baseline


def baseline_plugin(rev: str) -> ModuleType:
    """mlflow_plugin.py as it was at `rev`, loaded as a module of the installed package (its relative imports)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:mlflow_oidc_jupyter/mlflow_plugin.py"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    ).stdout  # fmt: skip
    spec = importlib.util.spec_from_loader("mlflow_oidc_jupyter._baseline_plugin", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "mlflow_oidc_jupyter"
    exec(compile(source, f"{rev}:mlflow_plugin.py", "exec"), module.__dict__)  # noqa: S102 - our own file at rev
    return module


def register(name: str, plugin: ModuleType) -> None:
    """Make `MLFLOW_TRACKING_AUTH=name` select `plugin`'s auth object (as its entry point would)."""
    from mlflow.tracking.request_auth.registry import _request_auth_provider_registry

    class Provider(plugin.OIDCAuthProvider):  # type: ignore[name-defined,misc]
        def get_name(self) -> str:
            return name

    _request_auth_provider_registry.register(Provider)


def auth_cost_us(make_auth: Callable[[], requests.auth.AuthBase], url: str, count: int) -> float:
    """Microseconds of CPU one request spends in the plugin (auth object + its response hook), no network."""
    request = requests.Request("POST", url, json={"key": "m", "value": 1.0}).prepare()
    response = requests.Response()
    response.status_code, response.url = 200, url
    response.headers["Content-Type"] = "application/json"
    samples = []
    for _ in range(5):
        copies = [request.copy() for _ in range(count)]  # copying is MLflow's and requests' cost, not ours
        for prepared in copies:
            prepared.hooks = {"response": []}  # copy() shares the hook list; each request has its own
        began = time.process_time()
        for prepared in copies:
            response.request = make_auth()(prepared)
            for hook in prepared.hooks["response"]:
                hook(response)
        samples.append((time.process_time() - began) / count * 1e6)
    return statistics.median(samples)


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--calls", type=int, default=600, help="log_metric calls per way (default %(default)s)")
    p.add_argument("--baseline", metavar="REV", help="also measure the plugin at this git revision")
    args = p.parse_args()
    if args.short:
        args.calls = 10
    old = f"oidc plugin at {args.baseline}"
    ways = (STATIC, PLUGIN, old) if args.baseline else (STATIC, PLUGIN)
    auth_names = {PLUGIN: "oidc", old: BASELINE_AUTH}

    heading(
        "Client overhead: MLFLOW_TRACKING_AUTH=oidc vs a static token",
        f"`MlflowClient.log_metric` through nginx + gate, {args.calls} calls per way taking turns call by call "
        "(order reversed every turn); ratio: median of back-to-back pairs, with a bootstrap 95% interval.",
    )
    # The token cache (ci-bot's tokens) lives as long as the stack, and goes with it.
    with (
        local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (_stack, endpoints),
        tempfile.TemporaryDirectory(prefix="bench-client-cache-") as cache_dir,
    ):
        bot = endpoints["clients"]["ci-bot"]
        os.environ.update(
            MLFLOW_TRACKING_URI=endpoints["mlflow_url"],
            MLFLOW_OIDC_ISSUER=endpoints["issuer"],
            MLFLOW_OIDC_CLIENT_ID=bot["client_id"],
            MLFLOW_OIDC_CLIENT_SECRET=bot["client_secret"],
            MLFLOW_OIDC_AUDIENCE=endpoints["audience"],
            MLFLOW_OIDC_CACHE_DIR=cache_dir,
            MLFLOW_DISABLE_TELEMETRY="true",
        )
        session = Session(Settings.load())
        session.login_client_credentials()
        set_default_session(session)
        static = bot_token(endpoints)

        import mlflow  # after the environment: MLflow reads some settings at import

        from mlflow_oidc_jupyter import mlflow_plugin

        plugins = {PLUGIN: mlflow_plugin}
        if args.baseline:
            plugins[old] = baseline_plugin(args.baseline)
            register(BASELINE_AUTH, plugins[old])

        def use(way: str) -> None:
            if way == STATIC:
                os.environ.pop("MLFLOW_TRACKING_AUTH", None)
                os.environ["MLFLOW_TRACKING_TOKEN"] = static
            else:
                os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
                os.environ["MLFLOW_TRACKING_AUTH"] = auth_names[way]

        client = mlflow.MlflowClient()
        use(STATIC)
        run_id = client.create_run(client.create_experiment(f"bench-client-{os.getpid()}")).info.run_id
        keys = {way: f"m{i}" for i, way in enumerate(ways)}
        steps = {way: itertools.count() for way in ways}

        for way in ways:  # warm-up: connections, first-use imports
            use(way)
            client.log_metric(run_id, "warm", 0.0)

        def call(way: str) -> float:
            use(way)
            began = time.perf_counter()
            client.log_metric(run_id, keys[way], 1.0, step=next(steps[way]))
            return time.perf_counter() - began

        runs = interleaved(args.calls, ways, call)
        logged = {way: len(client.get_metric_history(run_id, keys[way])) for way in ways}
        url = f"{endpoints['mlflow_url']}/api/2.0/mlflow/runs/log-metric"
        count = 200 if args.short else 2000
        cost = {way: auth_cost_us(plugins[way].OIDCBearerAuth, url, count) for way in ways if way != STATIC}
        session.close()

    rows = []
    for way in ways:
        values = runs[way]
        rows.append((way, f"{len(values) / sum(values):.1f}", f"{1000 * percentile(values, 50):.1f}",
                     f"{1000 * percentile(values, 99):.1f}", logged[way],
                     f"{cost[way]:.0f}" if way in cost else "-"))  # fmt: skip
    print(table(("way", "calls/s", "p50 ms", "p99 ms", "metrics logged", "plugin CPU µs/request"), rows))
    print()
    for way in ways[1:]:
        # Call i of each way ran back to back: the ratio of a pair is free of the load both met.
        pairs = [static / other for static, other in zip(runs[STATIC], runs[way], strict=True)]
        low, high = median_interval(pairs)
        at_p50 = statistics.median(runs[STATIC]) / statistics.median(runs[way])
        label = "ratio oidc/static" if way == PLUGIN else f"ratio ({way})/static"
        print(
            f"{label} (calls/s, median of {len(pairs)} back-to-back pairs): {statistics.median(pairs):.3f}x "
            f"(95% interval {low:.3f}-{high:.3f}; ratio of median latencies {at_p50:.3f}x; goal >= 0.97x)"
        )
    share = cost[PLUGIN] / 1e6 / statistics.median(runs[PLUGIN])
    print(
        f"\nThe plugin's own CPU per request is {100 * share:.3f}% of a median call: a gap wider than that is "
        "the network's and servers' noise."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
