"""The demo: the local stack plus JupyterLab with mlflow-oidc-jupyter, until Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
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
    if args.jupyterhub:
        return _hub_demo(LocalStack(DEFAULT_RUN_DIR))

    stack = LocalStack(DEFAULT_RUN_DIR)
    jupyter: JupyterProcess | None = None
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if not port_free(args.jupyter_port):
            raise StackError(
                f"port {args.jupyter_port} for JupyterLab is taken: use --jupyter-port or DEMO_JUPYTER_PORT"
            )
        endpoints = stack.up(idp=args.idp)
        jupyter = _jupyterlab(endpoints, args.jupyter_port, stack.layout.run_dir)
        jupyter.start()
        base, token = jupyter.url.rstrip("/"), jupyter.token
        users = "\n".join(
            f"    {user:6} password {info['password']:18} role {', '.join(info['roles'])}"
            for user, info in endpoints["users"].items()
        )
        print(
            f"\nmlflow-oidc-jupyter demo is running (stack started in {endpoints['started_in_seconds']} s)\n\n"
            f"  JupyterLab:      {base}/lab?token={token}\n"
            f"  MLflow UI:       {base}/mlflow/  (through JupyterLab, after sign-in)\n"
            f"  MLflow tracking: {endpoints['mlflow_url']}  (identity-aware proxy: bearer token required)\n"
            f"  OpenID Provider: {endpoints['issuer']}\n"
            f"  Demo logins:\n{users}\n\n"
            f"  In a notebook:   %load_ext mlflow_oidc_jupyter   then   %mlflow_login\n"
            f'  In a terminal:   .venv/bin/mlflow-oidc login  after  eval "$(stack/run env)"\n\n'
            f"  Logs: {stack.layout.run_dir / 'logs'}      Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            if jupyter.proc is None or jupyter.proc.poll() is not None:
                raise StackError(f"JupyterLab stopped. Last lines of {jupyter.log_path}:\n{log_tail(jupyter.log_path)}")
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
        if jupyter is not None:
            jupyter.stop()
        stopped = stack.down()
        _say(f"stopped: {', '.join(['jupyterlab', *stopped]) if jupyter else ', '.join(stopped) or 'nothing'}")


def _hub_demo(stack: LocalStack) -> int:
    """The stack with JupyterHub: people sign in at the hub; MLflow works in their servers with no second sign-in."""
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        endpoints = stack.up(jupyterhub=True)
        hub = endpoints["jupyterhub_url"]
        users = "\n".join(
            f"    {user:6} password {info['password']:18} role {', '.join(info['roles'])}"
            for user, info in endpoints["users"].items()
        )
        print(
            "\nmlflow-oidc-jupyter demo with JupyterHub is running "
            f"(started in {endpoints['started_in_seconds']} s)\n\n"
            f"  JupyterHub:      {hub}\n"
            f"  MLflow UI:       {hub}user/<name>/mlflow/  (after signing in at the hub; no second sign-in)\n"
            f"  MLflow tracking: {endpoints['mlflow_url']}  (identity-aware proxy: bearer token required)\n"
            f"  OpenID Provider: {endpoints['issuer']}\n"
            f"  Demo logins:\n{users}\n\n"
            f"  In a notebook:   import mlflow; mlflow.log_metric('x', 1)   (no %mlflow_login needed)\n\n"
            f"  Logs: {stack.layout.run_dir / 'logs'}      Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            if len(stack.running()) < len(stack.status()):
                raise StackError(f"a stack component stopped; see the logs in {stack.layout.run_dir / 'logs'}")
            time.sleep(0.5)
        return 0
    except StackError as exc:
        _say(f"demo: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say(f"stopped: {', '.join(stack.down()) or 'nothing'}")


def _say(message: str) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
