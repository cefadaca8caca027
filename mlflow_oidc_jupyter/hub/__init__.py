"""JupyterHub: the hub is the one OIDC client; each user's server, and its kernels, get that user's tokens from it.

In ``jupyterhub_config.py``::

    from mlflow_oidc_jupyter.hub import configure_hub
    configure_hub(c, issuer=..., client_id="jupyterhub", client_secret=..., hub_url=..., tracking_uri=...)

The single-user side needs nothing but this package installed: the server extension finds the hub from the
environment the hub gives it (see `contract`).
"""

from __future__ import annotations

from typing import Any

from .config import configure_hub
from .contract import SCOPE

__all__ = ["SCOPE", "MLflowOIDCAuthenticator", "configure_hub"]


def __getattr__(name: str) -> Any:
    # The authenticator needs jupyterhub + oauthenticator, which single-user images need not have.
    if name == "MLflowOIDCAuthenticator":
        from .authenticator import MLflowOIDCAuthenticator

        return MLflowOIDCAuthenticator
    raise AttributeError(name)
