"""Use an MLflow tracking server behind OpenID Connect from Jupyter: sign in once, every call authenticated."""

__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """`%load_ext mlflow_oidc_jupyter` registers `%mlflow_login`, `%mlflow_logout`, `%mlflow_whoami`."""
    from .kernel import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """`%unload_ext mlflow_oidc_jupyter` stops the kernel layer's threads."""
    from .kernel import unload_ipython_extension as unload

    unload(ipython)
