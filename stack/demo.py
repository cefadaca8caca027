"""The demo: the local stack plus JupyterLab with mlflow-oidc-jupyter, until Ctrl-C stops everything."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from localstack import DEFAULT_RUN_DIR, HOST, LocalStack, StackError, _log_tail, _port_free, _start_time, _stop_entry

ROOT = Path(__file__).resolve().parent.parent


def _start_jupyter(endpoints: dict, port: int, token: str, run_dir: Path) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        # Kernels inherit these: `%load_ext mlflow_oidc_jupyter` then `%mlflow_login` needs nothing else.
        "MLFLOW_TRACKING_URI": endpoints["mlflow_url"],
        "MLFLOW_OIDC_ISSUER": endpoints["issuer"],
        "MLFLOW_OIDC_CLIENT_ID": endpoints["clients"]["jupyter"]["client_id"],
        "MLFLOW_OIDC_AUDIENCE": endpoints["audience"],
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "JUPYTER_TOKEN": token,
    }
    log_path = run_dir / "logs" / "jupyterlab.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
        f"--MLflowOIDC.issuer={endpoints['issuer']}", f"--MLflowOIDC.upstream_url={endpoints['mlflow_url']}",
        f"--MLflowOIDC.client_id={endpoints['clients']['jupyter']['client_id']}",
    ]  # fmt: skip
    if os.geteuid() == 0:
        argv.append("--allow-root")  # machines like CI's run everything as root
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # fmt: skip
    return proc, log_path


def _wait_jupyter(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"JupyterLab exited during start. Last lines of {log_path}:\n{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback URL we built)
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise StackError(
        f"JupyterLab did not answer within {timeout:.0f} s. Last lines of {log_path}:\n{_log_tail(log_path)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="./run demo", description=__doc__)
    parser.add_argument("--jupyter-port", type=int, default=int(os.environ.get("DEMO_JUPYTER_PORT", "8888")))
    args = parser.parse_args()

    stack = LocalStack(DEFAULT_RUN_DIR)
    jupyter: subprocess.Popen | None = None
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if not _port_free(args.jupyter_port):
            raise StackError(
                f"port {args.jupyter_port} for JupyterLab is taken: use --jupyter-port or DEMO_JUPYTER_PORT"
            )
        endpoints = stack.up()
        token = secrets.token_urlsafe(24)
        jupyter, log_path = _start_jupyter(endpoints, args.jupyter_port, token, stack.layout.run_dir)
        base = f"http://{HOST}:{args.jupyter_port}"
        _wait_jupyter(jupyter, f"{base}/api/status?token={token}", log_path)
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
            if jupyter.poll() is not None:
                raise StackError(f"JupyterLab stopped. Last lines of {log_path}:\n{_log_tail(log_path)}")
            if len(stack.running()) < 4:
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
            _stop_entry("jupyterlab", {"pid": jupyter.pid, "started": _start_time(jupyter.pid)})
            jupyter.wait()
        stopped = stack.down()
        _say(f"stopped: {', '.join(['jupyterlab', *stopped]) if jupyter else ', '.join(stopped) or 'nothing'}")


def _say(message: str) -> None:
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
