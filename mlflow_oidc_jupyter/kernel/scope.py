"""Whom a sign-in serves and what a sign-out did, in the words every output about them uses (docs/sign-in.md)."""

from __future__ import annotations

from dataclasses import dataclass

from ..oidc.tokens import Identity

#: The Jupyter server's sign-in, shared with the MLflow UI and its other notebooks.
SCOPE_SERVER = "server"
#: This kernel's own sign-in, in memory only.
SCOPE_KERNEL = "kernel"
#: The token cache's sign-in, shared with every program using the cache.
SCOPE_CACHE = "cache"


def scope_text(scope: str, cache_dir: str | None = None) -> str:
    """The people-facing words for a scope."""
    if scope == SCOPE_SERVER:
        return "the Jupyter server's sign-in, shared with the MLflow UI and every notebook using it"
    if scope == SCOPE_KERNEL:
        return "this kernel only (the Jupyter server, the MLflow UI and other notebooks keep theirs)"
    where = f" in {cache_dir}" if cache_dir else ""
    return f"this kernel and every program sharing the token cache{where} (mlflow-oidc CLI, other kernels)"


@dataclass(frozen=True)
class SignOut:
    """What `%mlflow_logout` did, in words that say whom it affected."""

    message: str
    end_session_url: str | None = None


def as_user(identity: Identity | None) -> str:
    """` (as alice)`, or nothing when nobody is known."""
    return f" (as {identity.username})" if identity else ""
