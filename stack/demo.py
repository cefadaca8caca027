"""The demo: the local stack plus JupyterLab with mlflow-oidc-jupyter, until Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .errors import StackError
from .jupyter import JupyterProcess, extension_args, jupyter_argv
from .localstack import DEFAULT_RUN_DIR, HOST, LocalStack
from .ports import port_free
from .processes import log_tail

ROOT = Path(__file__).resolve().parent.parent


def _jupyterlab(endpoints: dict, port: int, run_dir: Path) -> JupyterProcess:
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        # Kernels inherit these: `%load_ext mlflow_oidc_jupyter` then `%mlflow_login` needs nothing else.
        "MLFLOW_TRACKING_URI": endpoints["mlflow_url"],
        "MLFLOW_OIDC_ISSUER": endpoints["issuer"],
        "MLFLOW_OIDC_CLIENT_ID": endpoints["clients"]["jupyter"]["client_id"],
        "MLFLOW_OIDC_AUDIENCE": endpoints["audience"],
        "MLFLOW_OIDC_ROLES_CLAIM": ",".join(endpoints.get("roles_claim", [])) or "roles",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    argv = jupyter_argv(
        "jupyterlab", port=port, token=token, root_dir=ROOT / "notebooks", extra=extension_args(endpoints)
    )
    return JupyterProcess(argv, env, run_dir / "logs" / "jupyterlab.log", f"http://{HOST}:{port}/", token)


def main() -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    parser.add_argument("--jupyter-port", type=int, default=int(os.environ.get("DEMO_JUPYTER_PORT", "8888")))
    parser.add_argument(
        "--jupyterhub", action="store_true", help="JupyterHub (people sign in at the hub) instead of JupyterLab"
    )
    parser.add_argument(
        "--idp", choices=("local", "keycloak"), default="local",
        help="keycloak: a real Keycloak (downloaded once, cached) with PostgreSQL instead of the small local IdP",
    )  # fmt: skip
    args = parser.parse_args()
    stack = LocalStack(DEFAULT_RUN_DIR)
    if args.jupyterhub:
        return _run(stack, lambda: _hub_demo(stack, args.idp))
    jupyters: list[JupyterProcess] = []
    return _run(stack, lambda: _lab_demo(stack, args.jupyter_port, args.idp, jupyters), jupyters)


def _lab_demo(stack: LocalStack, port: int, idp: str, started: list[JupyterProcess]) -> JupyterProcess:
    """The stack plus JupyterLab: people sign in to MLflow from JupyterLab (the UI and `%mlflow_login`)."""
    if not port_free(port):
        raise StackError(f"port {port} for JupyterLab is taken: use --jupyter-port or DEMO_JUPYTER_PORT")
    endpoints = stack.up(idp=idp)
    jupyter = _jupyterlab(endpoints, port, stack.layout.run_dir)
    started.append(jupyter)
    jupyter.start()
    base, token = jupyter.url.rstrip("/"), jupyter.token
    print(
        f"\nmlflow-oidc-jupyter demo is running (stack started in {endpoints['started_in_seconds']} s)\n\n"
        f"  JupyterLab:      {base}/lab?token={token}\n"
        f"  MLflow UI:       {base}/mlflow/  (through JupyterLab, after sign-in)\n"
        f"  MLflow tracking: {endpoints['mlflow_url']}  (identity-aware proxy: bearer token required)\n"
        f"  OpenID Provider: {endpoints['issuer']}\n"
        f"  Demo logins:\n{_logins(endpoints)}\n\n"
        f"  In a notebook:   %load_ext mlflow_oidc_jupyter   then   %mlflow_login\n"
        f'  In a terminal:   .venv/bin/mlflow-oidc login  after  eval "$(stack/run env)"\n\n'
        f"  Logs: {stack.layout.run_dir / 'logs'}      Ctrl-C stops everything.\n",
        flush=True,
    )
    return jupyter


def _hub_demo(stack: LocalStack, idp: str) -> None:
    """The stack with JupyterHub: people sign in at the hub; MLflow works in their servers with no second sign-in."""
    endpoints = stack.up(jupyterhub=True, idp=idp)
    hub = endpoints["jupyterhub_url"]
    print(
        "\nmlflow-oidc-jupyter demo with JupyterHub is running "
        f"(started in {endpoints['started_in_seconds']} s)\n\n"
        f"  JupyterHub:      {hub}\n"
        f"  MLflow UI:       {hub}user/<name>/mlflow/  (after signing in at the hub; no second sign-in)\n"
        f"  MLflow tracking: {endpoints['mlflow_url']}  (identity-aware proxy: bearer token required)\n"
        f"  OpenID Provider: {endpoints['issuer']}\n"
        f"  Demo logins:\n{_logins(endpoints)}\n\n"
        f"  In a notebook:   import mlflow; mlflow.log_metric('x', 1)   (no %mlflow_login needed)\n"
        f'  In a terminal:   .venv/bin/mlflow-oidc login  after  eval "$(stack/run env)"  (device flow)\n\n'
        f"  Logs: {stack.layout.run_dir / 'logs'}      Ctrl-C stops everything.\n",
        flush=True,
    )


def _run(stack: LocalStack, start: Callable[[], object], jupyters: Sequence[JupyterProcess] = ()) -> int:
    """Start the demo, keep watching it until Ctrl-C (or something stops), then stop everything it started."""
    stopping = _stop_on_signals()
    try:
        start()
        while not stopping.is_set():
            for jupyter in jupyters:
                if jupyter.proc is None or jupyter.proc.poll() is not None:
                    raise StackError(
                        f"JupyterLab stopped. Last lines of {jupyter.log_path}:\n{log_tail(jupyter.log_path)}"
                    )
            if len(stack.running()) < len(stack.status()):
                raise StackError(f"a stack component stopped; see the logs in {stack.layout.run_dir / 'logs'}")
            time.sleep(0.5)
        return 0
    except StackError as exc:
        _say(f"demo: {exc}")
        return 1
    finally:
        # Clean-up first, words after: the terminal (or a pipe like `| tee`) may already be gone.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for jupyter in jupyters:
            jupyter.stop()
        stopped = [*("jupyterlab" for _ in jupyters), *stack.down()]
        _say(f"stopped: {', '.join(stopped) or 'nothing'}")


def _stop_on_signals() -> threading.Event:
    """SIGTERM and Ctrl-C end the demo's wait; the caller then stops everything it started."""
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda _signum, _frame: stopping.set())
    return stopping


def _logins(endpoints: dict) -> str:
    return "\n".join(
        f"    {user:6} password {info['password']:18} role {', '.join(info['roles'])}"
        for user, info in endpoints["users"].items()
    )


def _say(message: str) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
