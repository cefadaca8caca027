"""Where the stack keeps what it downloads or builds once (Keycloak, a PostgreSQL template): outside the repo."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "MLFLOW_OIDC_STACK_CACHE"


def cache_dir() -> Path:
    """`$MLFLOW_OIDC_STACK_CACHE`, else `$XDG_CACHE_HOME/mlflow-oidc-stack`, else `~/.cache/mlflow-oidc-stack`."""
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "mlflow-oidc-stack"
    path.mkdir(parents=True, exist_ok=True)
    return path
