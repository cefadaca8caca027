"""Choosing a kernel's token source: the Jupyter server's sign-in when it offers one for this provider, else its own."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..broker_contract import BrokerAddress, broker_from_env, server_serves
from ..oidc.default import peek_default_session
from ..oidc.session import Session
from ..settings import Settings
from .broker import BrokerSession
from .sources import OwnSignIn, ServerSignIn, TokenSource, same_session_settings


def choose_source(
    settings: Settings, flow: str | None, current: TokenSource | None, env: Mapping[str, str] | None = None
) -> tuple[TokenSource, bool]:
    """The source for `settings` and `flow` (None: the server's sign-in if any, else device), and whether its
    session is new (then the kernel owns it and closes it). A source that still fits is reused, so is a default
    session with the same settings (e.g. from `mlflow-oidc login` in this process)."""
    env = os.environ if env is None else env
    broker = broker_from_env(env)
    if broker is not None and flow in (None, "browser") and server_serves(settings, env):
        if isinstance(current, ServerSignIn) and current.session.address == broker:
            return current, False
        return ServerSignIn(BrokerSession(settings, broker)), True
    flow = flow or "device"
    own = current.session if isinstance(current, OwnSignIn) else None
    for candidate in (own, peek_default_session()):
        if isinstance(candidate, Session) and same_session_settings(candidate.settings, settings):
            return OwnSignIn(candidate, flow), False
    return OwnSignIn(Session(settings), flow), True


def server_ui_path(env: Mapping[str, str] | None = None) -> str | None:
    """The MLflow UI's path on the Jupyter server that started this kernel, when it has the extension."""
    broker: BrokerAddress | None = broker_from_env(env)
    return broker.ui_path if broker else None
