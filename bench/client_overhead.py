"""What the MLflow plugin costs a client: MLFLOW_TRACKING_AUTH=oidc vs a static MLFLOW_TRACKING_TOKEN.

    .venv/bin/python bench/client_overhead.py [--calls 100] [--rounds 6] [--short]

Starts its own local stack; both ways sign in as ci-bot (client credentials) and log metrics to one run through
nginx + gate with `MlflowClient.log_metric`. MLflow reads the auth settings on every request, so the two ways
take turns in one process, batch by batch (order alternated every round); calls/s and p50/p99 per call.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from benchlib import bot_token, heading, interleaved, local_stack, parser, percentile, table

from mlflow_oidc_jupyter.oidc.default import set_default_session
from mlflow_oidc_jupyter.oidc.session import Session
from mlflow_oidc_jupyter.settings import Settings

WAYS = ("static token", "oidc plugin")


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--calls", type=int, default=100, help="log_metric calls per batch (default %(default)s)")
    p.add_argument("--rounds", type=int, default=6, help="batches per way (default %(default)s)")
    args = p.parse_args()
    if args.short:
        args.calls, args.rounds = 5, 2

    heading(
        "Client overhead: MLFLOW_TRACKING_AUTH=oidc vs a static token",
        f"`MlflowClient.log_metric` through nginx + gate, {args.rounds} batches of {args.calls} calls per way, "
        "alternated; p50/p99 per call.",
    )
    with local_stack({"IDP_ACCESS_TOKEN_TTL": "3600"}) as (_stack, endpoints):
        bot = endpoints["clients"]["ci-bot"]
        os.environ.update(
            MLFLOW_TRACKING_URI=endpoints["mlflow_url"],
            MLFLOW_OIDC_ISSUER=endpoints["issuer"],
            MLFLOW_OIDC_CLIENT_ID=bot["client_id"],
            MLFLOW_OIDC_CLIENT_SECRET=bot["client_secret"],
            MLFLOW_OIDC_AUDIENCE=endpoints["audience"],
            MLFLOW_OIDC_CACHE_DIR=tempfile.mkdtemp(prefix="bench-client-cache-"),
            MLFLOW_DISABLE_TELEMETRY="true",
        )
        session = Session(Settings.load())
        session.login_client_credentials()
        set_default_session(session)
        static = bot_token(endpoints)

        import mlflow  # after the environment: MLflow reads some settings at import

        def use(way: str) -> None:
            if way == "oidc plugin":
                os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
                os.environ["MLFLOW_TRACKING_AUTH"] = "oidc"
            else:
                os.environ.pop("MLFLOW_TRACKING_AUTH", None)
                os.environ["MLFLOW_TRACKING_TOKEN"] = static

        client = mlflow.MlflowClient()
        use("static token")
        run_id = client.create_run(client.create_experiment(f"bench-client-{os.getpid()}")).info.run_id

        def batch(way: str) -> list[float]:
            use(way)
            client.log_metric(run_id, "warm", 0.0)
            out = []
            for step in range(args.calls):
                began = time.perf_counter()
                client.log_metric(run_id, way.split()[0], float(step), step=step)
                out.append(time.perf_counter() - began)
            return out

        runs = interleaved(args.rounds, WAYS, batch)
        logged = {way: len(client.get_metric_history(run_id, way.split()[0])) for way in WAYS}
        session.close()

    rows, rate = [], {}
    for way in WAYS:
        values = [v for b in runs[way] for v in b]
        rate[way] = len(values) / sum(values)
        rows.append((way, f"{rate[way]:.0f}", f"{1000 * percentile(values, 50):.1f}",
                     f"{1000 * percentile(values, 99):.1f}", logged[way]))  # fmt: skip
    print(table(("way", "calls/s", "p50 ms", "p99 ms", "metrics logged"), rows))
    print(f"\nratio oidc/static (calls/s): {rate['oidc plugin'] / rate['static token']:.3f}x (goal >= 0.97x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
