"""IPython extension: `%mlflow_login` and friends, and the login widget, presenting the kernel's OIDC session."""

from __future__ import annotations

from typing import Any

from .login import KernelLogin
from .magics import MLflowOIDCMagics

_login: KernelLogin | None = None


def load_ipython_extension(ipython: Any) -> None:
    """`%load_ext mlflow_oidc_jupyter`: register the magics (idempotent)."""
    global _login
    if _login is None:
        _login = KernelLogin()
    ipython.register_magics(MLflowOIDCMagics(ipython, _login))


def unload_ipython_extension(ipython: Any) -> None:
    """`%unload_ext mlflow_oidc_jupyter`: stop every thread, restore MLflow's auth setting (tokens stay cached)."""
    global _login
    if _login is not None:
        _login.close()
        _login = None
    for name in ("mlflow_login", "mlflow_logout", "mlflow_whoami"):
        ipython.magics_manager.magics["line"].pop(name, None)


__all__ = ["KernelLogin", "load_ipython_extension", "unload_ipython_extension"]
