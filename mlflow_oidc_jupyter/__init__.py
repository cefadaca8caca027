"""Use an MLflow tracking server behind OpenID Connect from Jupyter: sign in once, every call authenticated."""

__version__ = "0.1.0"
