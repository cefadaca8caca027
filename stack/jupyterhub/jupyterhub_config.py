# JupyterHub of the local stack (started by `stack/run up --jupyterhub`); reads STACK_HUB_SETTINGS for its ports.
# The MLflow part is the configure_hub call: the same lines as in docs/jupyterhub.md. The rest is local plumbing.
import json
import os
import sys
from pathlib import Path

from mlflow_oidc_jupyter.hub import configure_hub

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
stack = json.loads(Path(os.environ["STACK_HUB_SETTINGS"]).read_text())

configure_hub(
    c,
    issuer=stack["issuer"],
    client_id=stack["client_id"],
    client_secret=stack["client_secret"],
    hub_url=stack["hub_url"],
    tracking_uri=stack["tracking_uri"],
    audience=stack["audience"],
)
c.Authenticator.allow_all = True  # everyone the local IdP signs in (the demo users)
c.MLflowOIDCAuthenticator.enable_auth_state = stack.get("enable_auth_state", True)  # tests turn it off

# Loopback only; the proxy runs as its own process so that a hub restart leaves routes and servers alone.
c.JupyterHub.bind_url = stack["hub_url"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = stack["hub_port"]
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = stack["proxy_api_url"]
c.JupyterHub.cleanup_servers = False
c.JupyterHub.db_url = f"sqlite:///{stack['state_dir']}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{stack['state_dir']}/jupyterhub_cookie_secret"

# Local spawner without system users: every server runs as this account, HOME per user. Local demo and tests
# only (no isolation between users); a real deployment uses a spawner with per-user isolation (e.g. Kubernetes).
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = stack["home_dir"] + "/{username}"
c.Spawner.cmd = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.Spawner.environment.update(
    {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "STACK_HUB_STATE_DIR": stack["state_dir"]}
)
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]  # machines like CI's run everything as root
