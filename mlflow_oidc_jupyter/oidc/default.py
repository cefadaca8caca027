"""The process default session: built lazily from settings + cache, so scripts and child processes just work."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol

from ..broker_contract import broker_from_env
from ..errors import ConfigError
from ..hub.contract import HUB_SESSION_ENV
from ..settings import Settings
from .broker import BrokerSession
from .cache import TokenCache
from .observable import Listener, SessionSnapshot
from .session import Session
from .tokens import Identity


class DefaultSession(Protocol):
    """What the MLflow plugin and the kernel use of the default session: a Session, or a kernel's stand-in."""

    @property
    def settings(self) -> Settings: ...
    @property
    def identity(self) -> Identity | None: ...
    @property
    def signed_in(self) -> bool: ...
    def snapshot(self) -> SessionSnapshot: ...
    def add_listener(self, listener: Listener) -> Callable[[], None]: ...
    def access_token(self) -> str: ...
    def token_rejected(self, token: str) -> str: ...


class AnySession(DefaultSession, Protocol):
    """What code showing or choosing a session asks of it, whoever holds its tokens: this process (`Session`) or
    another party (`RemoteSession`: the Jupyter server's `BrokerSession`, the hub's `HubSession`)."""

    @property
    def holder(self) -> str | None: ...
    @property
    def holder_url(self) -> str | None: ...
    @property
    def holder_identity(self) -> Identity | None: ...
    @property
    def login_url(self) -> str | None: ...
    @property
    def ui_url(self) -> str | None: ...
    @property
    def detached(self) -> bool: ...
    @property
    def cache(self) -> TokenCache | None: ...
    def attach(self) -> None: ...
    def sign_out_holder(self) -> None: ...
    def load_cached(self) -> bool: ...
    def logout(self, *, revoke: bool = True) -> str | None: ...
    def close(self) -> None: ...


_default: DefaultSession | None = None
_lock = threading.Lock()


def get_default_session(settings: Settings | None = None) -> DefaultSession:
    """The session MLflow requests use; created on first use from `settings` (or env/config) and the cache."""
    global _default
    with _lock:
        if _default is None:
            _default = _session_for_this_process(settings or Settings.load())
        return _default


def _session_for_this_process(settings: Settings) -> DefaultSession:
    """Under JupyterHub a kernel uses its server's session through the broker (the hub signed the user in and
    refreshes; never a token cache that may hold someone else); anything else its own session, from the cache."""
    if os.environ.get(HUB_SESSION_ENV) == "1":
        broker = broker_from_env()
        if broker is not None and server_provider_is(settings):
            return BrokerSession(settings, *broker)
    session = Session(settings)
    session.load_cached()
    return session


def server_provider_is(settings: Settings) -> bool:
    """The server exports its issuer and client to its kernels; its session serves only kernels that want those."""
    server_issuer = os.environ.get("MLFLOW_OIDC_ISSUER", "").rstrip("/")
    server_client = os.environ.get("MLFLOW_OIDC_CLIENT_ID", "")
    return (not server_issuer or server_issuer == settings.issuer) and (
        not server_client or server_client == settings.client_id
    )


def set_default_session(session: DefaultSession | None) -> DefaultSession | None:
    """Install `session` (e.g. the notebook's) as the process default; returns the one it replaces."""
    global _default
    with _lock:
        previous, _default = _default, session
    return previous


def peek_default_session() -> DefaultSession | None:
    """The default session if one exists already; never creates one."""
    return _default


def find_default_session() -> DefaultSession | None:
    """The default session, creating it only if settings are configured; None instead of a ConfigError."""
    if _default is not None:
        return _default
    try:
        return get_default_session()
    except ConfigError:
        return None


def _forget_in_child() -> None:
    # A forked child has the parent's session object but none of its threads, and maybe a held lock:
    # start afresh from the shared cache instead.
    global _default, _lock
    _default = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
