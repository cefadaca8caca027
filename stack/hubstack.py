"""The JupyterHub tier of the local stack: configurable-http-proxy and a hub that signs people in at the IdP."""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import psutil

from mlflow_oidc_jupyter.files import write_private

from .installs import npm_ci
from .ports import HOST

STACK_DIR = Path(__file__).resolve().parent
HUB_DIR = STACK_DIR / "jupyterhub"

#: Started after the rest of the stack, in this order: the hub registers routes in the running proxy.
COMPONENTS = ("proxy", "hub")
#: The proxy's API port is not a component of its own; it is chosen and checked with the others.
PORTS = ("proxy", "proxy-api", "hub")
DEFAULT_PORTS = {"proxy": 8000, "proxy-api": 8001, "hub": 8082}
START_TIMEOUT = {"proxy": 30.0, "hub": 120.0}
CLIENT_ID = "jupyterhub"


def new_secrets() -> dict[str, str]:
    """Per-instance secrets, kept across restarts: the hub's client secret, auth_state key, proxy API token."""
    return {
        "jupyterhub": secrets.token_urlsafe(32),
        "jupyterhub-crypt-key": secrets.token_hex(32),
        "configproxy-auth-token": secrets.token_urlsafe(32),
    }


def hub_url(ports: dict[str, int]) -> str:
    """What people open: the proxy in front of the hub and every user's server."""
    return f"http://{HOST}:{ports['proxy']}"


def idp_client(ports: dict[str, int], client_secret: str) -> dict:
    """The hub's registration at the IdP: confidential, exact redirect URIs only."""
    base = hub_url(ports)
    return {
        "client_id": CLIENT_ID,
        "client_name": "JupyterHub",
        "client_secret": client_secret,
        "redirect_uris": [f"{base}/hub/oauth_callback"],
        "post_logout_redirect_uris": [f"{base}/hub/login"],
    }


def write_settings(run_dir: Path, ports: dict[str, int], endpoints: dict, client_secret: str) -> Path:
    """What stack/jupyterhub/jupyterhub_config.py reads (0600: it holds the client secret)."""
    hub_dir = run_dir / "hub"
    (hub_dir / "home").mkdir(parents=True, exist_ok=True)
    settings = {
        "issuer": endpoints["issuer"],
        "audience": endpoints["audience"],
        "tracking_uri": endpoints["mlflow_url"],
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "hub_url": hub_url(ports),
        "hub_port": ports["hub"],
        "proxy_api_url": f"http://{HOST}:{ports['proxy-api']}",
        "state_dir": str(hub_dir),
        "home_dir": str(hub_dir / "home"),
    }
    path = hub_dir / "settings.json"
    write_private(path, json.dumps(settings, indent=2))
    return path


def command(name: str, run_dir: Path, ports: dict[str, int], values: dict[str, str], env: dict[str, str]):
    """argv and environment of one hub component; `values` are the instance's secrets."""
    env = dict(env)
    env["CONFIGPROXY_AUTH_TOKEN"] = values["configproxy-auth-token"]
    if name == "proxy":
        chp = HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy"
        return [
            str(chp), "--ip", HOST, "--port", str(ports["proxy"]),
            "--api-ip", HOST, "--api-port", str(ports["proxy-api"]),
            "--default-target", f"http://{HOST}:{ports['hub']}",
            "--error-target", f"http://{HOST}:{ports['hub']}/hub/error",
        ], env  # fmt: skip
    if name == "hub":
        env["JUPYTERHUB_CRYPT_KEY"] = values["jupyterhub-crypt-key"]
        env["STACK_HUB_SETTINGS"] = str(run_dir / "hub" / "settings.json")
        return [sys.executable, "-m", "jupyterhub", "-f", str(HUB_DIR / "jupyterhub_config.py")], env
    raise ValueError(name)


def health_url(name: str, ports: dict[str, int]) -> tuple[str, set[int]]:
    """Where a component says it is up, and the answers that mean so."""
    if name == "proxy":
        return f"http://{HOST}:{ports['proxy-api']}/api/routes", {403}  # the API answers, and wants its token
    # Through the public port, as people come: the hub is up only when the proxy routes to it.
    return f"{hub_url(ports)}/hub/health", {200}


def ensure_proxy_installed() -> None:
    """configurable-http-proxy from npm (package-lock.json pins it), installed on first use."""
    npm_ci(HUB_DIR, HUB_DIR / "node_modules" / ".bin" / "configurable-http-proxy")


#: In the environment of every user's server (and so of its kernels): which stack instance started it.
SERVER_MARK = "STACK_HUB_STATE_DIR"


def user_server_pids(run_dir: Path) -> list[int]:
    """Processes of users' servers and kernels of this instance; they outlive the hub (cleanup_servers off)."""
    mark = str(run_dir / "hub")
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(SERVER_MARK) == mark:
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


def stop_user_servers(run_dir: Path, timeout: float = 15.0) -> int:
    """End users' servers (TERM: they shut their kernels down), then whatever is left; returns how many ran."""
    pids = user_server_pids(run_dir)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if _running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return len(pids)


def _running(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our own child
    except ChildProcessError:
        pass
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
