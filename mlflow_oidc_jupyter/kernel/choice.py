"""Which session a kernel uses: the Jupyter server's (through its broker), the token cache's, or its own."""

from __future__ import annotations

from dataclasses import dataclass

from ..broker_contract import broker_from_env, server_paths
from ..oidc.broker import BrokerSession
from ..oidc.default import AnySession, peek_default_session, server_provider_is
from ..oidc.session import Session
from ..settings import Settings
from .scope import SCOPE_CACHE, SCOPE_KERNEL, SCOPE_SERVER

FLOWS = ("device", "browser", "client-credentials")


@dataclass(frozen=True)
class Choice:
    """The session a kernel signs in with, and how."""

    session: AnySession
    #: The kernel's own session, when it signs in itself (None: the Jupyter server signs in).
    own: Session | None
    #: `server` (the Jupyter server's sign-in) or one of FLOWS.
    flow: str
    #: Whom the sign-in serves (`scope.SCOPE_*`).
    scope: str
    #: The MLflow UI's path on the Jupyter server (None: no Jupyter server with the extension).
    ui_url: str | None
    #: A session of this kernel's own made for this choice: closed when the kernel stops using it.
    owned: bool


def choose(settings: Settings, *, flow: str | None, new: bool, current: Choice | None) -> Choice:
    """The session for `settings` and `flow` (None: the server's sign-in when this kernel has one, else device).

    `new`: a fresh sign-in for this kernel alone (memory only), whoever else is signed in. Under a Jupyter server
    with the broker, an explicit flow is this kernel's own sign-in too: it never shares (or revokes) the refresh
    token the server holds. `current` (the kernel's choice so far) keeps its session when that fits.
    """
    broker = broker_from_env()
    if broker is not None and not new and flow in (None, "browser") and server_provider_is(settings):
        server_ui = server_paths(broker[0])[1]
        if current is not None and current.session.holder_url == broker[0]:
            return Choice(current.session, None, "server", SCOPE_SERVER, server_ui, owned=False)
        return Choice(BrokerSession(settings, *broker), None, "server", SCOPE_SERVER, server_ui, owned=False)
    ui_path = server_paths(broker[0])[1] if broker else None
    private = new or broker is not None  # this kernel's alone: nobody else can revoke it
    scope = SCOPE_KERNEL if private else SCOPE_CACHE
    own_flow = flow or "device"
    mine = current.own if current is not None else None
    if not new and mine is not None and _same(mine.settings, settings) and (mine.cache is None) == private:
        return Choice(mine, mine, own_flow, scope, ui_path, owned=False)
    if private:
        own = Session(settings, use_cache=False)
        return Choice(own, own, own_flow, scope, ui_path, owned=True)
    existing = peek_default_session()
    if isinstance(existing, Session) and existing.cache is not None and _same(existing.settings, settings):
        return Choice(existing, existing, own_flow, scope, ui_path, owned=False)
    own = Session(settings)
    return Choice(own, own, own_flow, scope, ui_path, owned=True)


def _same(a: Settings, b: Settings) -> bool:
    keys = ("issuer", "client_id", "client_secret", "scopes", "audience", "resource", "tracking_uri", "cache_dir")
    return all(getattr(a, k) == getattr(b, k) for k in keys)
