"""HTTP clients authenticated the way a user's script is: `Authorization: token <Jupyter or JupyterHub token>`."""

from __future__ import annotations

import requests


def token_client(token: str) -> requests.Session:
    """A requests session sending `token` on every request (a Jupyter server's, or a JupyterHub API token)."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    return session
