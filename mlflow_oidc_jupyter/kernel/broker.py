"""The kernel side of the Jupyter server's broker: the server's session, seen from one of its kernels."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import requests

from ..broker_contract import REJECTED_PARAM, SECRET_HEADER, BrokerAddress, token_digest
from ..errors import LoginRequired, OIDCError, TokenRefreshFailed
from ..oidc.backoff import backoff_delay
from ..oidc.remote import RemoteSession
from ..settings import Settings

logger = logging.getLogger(__name__)


class BrokerSession(RemoteSession):
    """Duck-types the core `Session` for the MLflow plugin and the widget; the server owns and refreshes tokens.

    The kernel never sees a refresh token: it asks the broker for an access token when its copy is near
    expiry, and a background thread renews it ahead of time so idle kernels show a live state.
    """

    _refresher_name = "mlflow-oidc-broker"
    holder = "The Jupyter server"

    def __init__(self, settings: Settings, address: BrokerAddress, *, background_refresh: bool = True) -> None:
        super().__init__(settings, background_refresh=background_refresh)
        self.address = address
        self.url = address.url
        self._renewal_failures = 0  # the refresher thread's own count

    def __repr__(self) -> str:
        user = self._identity.username if self._identity else None
        return f"<BrokerSession {self.url} user={user} {self._state.value}>"

    def _request(self, rejected: str | None) -> requests.Response:
        try:
            return self._http.get(
                self.url,
                params={REJECTED_PARAM: rejected} if rejected else None,
                headers={SECRET_HEADER: self.address.secret},
                timeout=self.settings.timeout + 20,
            )
        except requests.RequestException as exc:
            parts = urlsplit(self.url)
            raise TokenRefreshFailed(
                f"The Jupyter server at {parts.scheme}://{parts.netloc} cannot be reached for a token "
                f"({type(exc).__name__}); is it still running?"
            ) from None

    def _digest(self, token: str) -> str:
        return token_digest(token)

    def _refresh_when_due(self) -> float | None:
        expires_at = self._expires_at
        if not self._token or expires_at is None:
            return None
        delay = max(self._renew_at(expires_at) - time.time(), backoff_delay(self._renewal_failures))
        # Wait here, not in the loop: once the pause is over, renew without asking again whether it is due.
        if (delay > 0 and self._wake.wait(delay)) or self._stop.is_set():
            return 0.0
        try:
            self._fetch()
            self._renewal_failures = 0
        except LoginRequired:
            pass  # the state tells the widget
        except OIDCError as exc:
            self._renewal_failures += 1
            logger.warning("Broker token renewal failed: %s", exc)
            return backoff_delay(self._renewal_failures)
        return 0.0
