"""OpenID Connect for one user and one client: provider, flows, validated tokens, cache and the Session."""

from .cache import TokenCache
from .client import DeviceAuthorization, OIDCClient, PendingAuthorization
from .default import find_default_session, get_default_session, peek_default_session, set_default_session
from .flows import LoopbackRedirect, browser_login, device_login
from .provider import Provider, ProviderMetadata
from .session import Session, SessionSnapshot, SessionState
from .tokens import Identity, TokenSet
from .validation import TokenValidator

__all__ = [
    "DeviceAuthorization",
    "Identity",
    "LoopbackRedirect",
    "OIDCClient",
    "PendingAuthorization",
    "Provider",
    "ProviderMetadata",
    "Session",
    "SessionSnapshot",
    "SessionState",
    "TokenCache",
    "TokenSet",
    "TokenValidator",
    "browser_login",
    "device_login",
    "find_default_session",
    "get_default_session",
    "peek_default_session",
    "set_default_session",
]
