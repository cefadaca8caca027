"""The OAuth/OIDC client: one call per protocol step (authlib does the protocol), validated TokenSets out."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
import urllib3
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from ..errors import LoginFailed, ProviderError
from ..settings import Settings
from .provider import Provider
from .tokens import TokenSet
from .validation import TokenValidator

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: OAuth errors that say "try again later" rather than "this will never work".
TRANSIENT_ERRORS = {"temporarily_unavailable", "server_error"}


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the user must see to approve a device sign-in (RFC 8628)."""

    verification_uri: str
    user_code: str
    expires_at: float
    interval: float
    verification_uri_complete: str | None = None
    device_code: str = field(default="", repr=False)
    code_verifier: str = field(default="", repr=False)


@dataclass(frozen=True)
class PendingAuthorization:
    """An authorization code + PKCE sign-in between redirect and callback; keep it server-side."""

    url: str
    redirect_uri: str
    state: str
    nonce: str = field(repr=False)
    code_verifier: str = field(repr=False)
    created_at: float = 0.0


class OIDCClient:
    """Speaks to one provider as one client: device, auth code + PKCE, client credentials, refresh, revoke."""

    def __init__(self, settings: Settings, provider: Provider | None = None) -> None:
        self.settings = settings
        self.provider = provider or Provider.for_settings(settings)
        self.validator = TokenValidator(settings, self.provider)

    # -- building blocks -------------------------------------------------------------------------------------

    def _oauth(self, **kwargs: Any) -> OAuth2Session:
        s = self.settings
        session = OAuth2Session(
            client_id=s.client_id,
            client_secret=s.client_secret,
            token_endpoint_auth_method="client_secret_basic" if s.client_secret else "none",
            code_challenge_method="S256",
            **kwargs,
        )
        session.verify = s.verify
        return session

    def _extra(self) -> dict[str, Any]:
        return {"resource": self.settings.resource} if self.settings.resource else {}

    def _call(
        self, what: str, fn: Any, *args: Any, timeout: float | tuple[float, float] | None = None, **kwargs: Any
    ) -> Any:
        """Run one authlib call, mapping its failures to ProviderError (transient or not)."""
        try:
            return fn(*args, timeout=timeout or self.settings.timeout, **kwargs)
        except OAuthError as exc:
            error = exc.error or "oauth_error"
            detail = f": {exc.description}" if exc.description else ""
            raise ProviderError(
                f"The identity provider refused the {what} ({error}{detail}).",
                error=error,
                transient=error in TRANSIENT_ERRORS,
            ) from None
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            raise ProviderError(
                f"The identity provider answered HTTP {status} to the {what}.",
                error=f"http_{status}",
                transient=status >= 500 or status == 429,
            ) from None
        except requests.RequestException as exc:
            unanswered = not _never_sent(exc)
            problem = "did not answer" if unanswered else "cannot be reached for"
            raise ProviderError(
                f"The identity provider at {self.provider.issuer} {problem} the {what} ({type(exc).__name__}).",
                error="network",
                transient=True,
                uncertain=unanswered,
            ) from None
        except ValueError as exc:
            raise ProviderError(f"The identity provider sent an unusable answer to the {what} ({exc}).") from None

    def tokens_from_response(
        self,
        response: dict[str, Any],
        *,
        grant: str,
        nonce: str | None = None,
        previous: TokenSet | None = None,
        sent_at: float | None = None,
    ) -> TokenSet:
        """Validate a token endpoint answer and attach the identity it proves.

        `sent_at`: when the request left; lifetimes count from then, since a slow answer brings tokens that have
        already lived that long.
        """
        if not response.get("access_token"):
            raise ProviderError("The identity provider's token answer has no access_token.")
        tokens = TokenSet.from_response(response, grant=grant, previous=previous, now=sent_at)
        previous_subject = previous.identity.subject if previous and previous.identity else None
        id_claims = None
        if response.get("id_token"):
            id_claims = self.validator.id_token_claims(
                response["id_token"],
                nonce=nonce,
                access_token=response["access_token"],
                expected_subject=previous_subject if previous and previous.id_token else None,
            )
        elif grant != "client_credentials" and previous is None:
            raise ProviderError("The identity provider returned no ID token: is `openid` among the scopes?")
        access_claims = self.validator.access_token_claims(response["access_token"])
        if id_claims is None and previous is not None and previous.identity is not None:
            identity = previous.identity
            if access_claims is not None:
                roles = self.validator.identity(None, access_claims, fallback_subject=identity.subject).roles
                identity = type(identity)(**{**identity.to_dict(), "roles": roles or identity.roles})
        else:
            identity = self.validator.identity(id_claims, access_claims, fallback_subject=self.settings.client_id)
        return tokens.with_identity(identity)

    # -- grants ----------------------------------------------------------------------------------------------

    def start_device_authorization(self) -> DeviceAuthorization:
        """Ask for a device code and user code (RFC 8628 section 3.1)."""
        endpoint = self.provider.metadata.device_authorization_endpoint
        if not endpoint:
            raise ProviderError("This identity provider does not offer the device flow; use --browser.")
        # PKCE on the device flow too: Keycloak requires it from a client whose PKCE method is S256; providers that
        # do not use it ignore the two parameters.
        verifier = generate_token(64)
        with self._oauth(scope=self.settings.scope) as oauth:
            body = {
                "scope": self.settings.scope,
                "code_challenge": create_s256_code_challenge(verifier),
                "code_challenge_method": "S256",
                **self._extra(),
            }  # client auth adds client_id
            auth = oauth.client_auth(oauth.token_endpoint_auth_method)
            data = self._call("device authorization request", _post_json, oauth, endpoint, body, auth)
        for key in ("device_code", "user_code", "verification_uri"):
            if not data.get(key):
                raise ProviderError(f"The device authorization answer has no {key}.")
        return DeviceAuthorization(
            verification_uri=data["verification_uri"],
            verification_uri_complete=data.get("verification_uri_complete"),
            user_code=data["user_code"],
            expires_at=time.time() + float(data.get("expires_in", 600)),
            interval=float(data.get("interval") or 5),
            device_code=data["device_code"],
            code_verifier=verifier,
        )

    def poll_device_token(self, device: DeviceAuthorization) -> TokenSet:
        """One token request for a device code; ProviderError.error is authorization_pending, slow_down..."""
        sent_at = time.time()
        params: dict[str, Any] = {"device_code": device.device_code, **self._extra()}
        if device.code_verifier:
            params["code_verifier"] = device.code_verifier
        with self._oauth() as oauth:
            response = self._call(
                "device token request",
                oauth.fetch_token,
                self.provider.metadata.token_endpoint,
                grant_type=DEVICE_CODE_GRANT,
                **params,
            )
        return self.tokens_from_response(dict(response), grant="device_code", sent_at=sent_at)

    def authorization_request(
        self, redirect_uri: str, *, prompt: str | None = None, **extra: str
    ) -> PendingAuthorization:
        """Start auth code + PKCE (S256): the URL to send the user to and the secrets to finish with."""
        endpoint = self.provider.metadata.authorization_endpoint
        if not endpoint:
            raise ProviderError("This identity provider has no authorization endpoint; use the device flow.")
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        params: dict[str, str] = {"nonce": nonce, **self._extra(), **extra}
        if "offline_access" in self.settings.scopes:
            params["prompt"] = "consent"  # providers drop offline_access without a consent prompt
        if prompt:
            params["prompt"] = prompt
        with self._oauth(scope=self.settings.scope, redirect_uri=redirect_uri) as oauth:
            url, _ = oauth.create_authorization_url(endpoint, state=state, code_verifier=verifier, **params)
        return PendingAuthorization(
            url=url,
            redirect_uri=redirect_uri,
            state=state,
            nonce=nonce,
            code_verifier=verifier,
            created_at=time.time(),
        )

    def exchange_code(self, pending: PendingAuthorization, callback_url: str) -> TokenSet:
        """Finish auth code + PKCE from the URL the provider redirected to: state, iss (RFC 9207), code."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback_url).query).items()}
        if not hmac.compare_digest(query.get("state", ""), pending.state):
            raise LoginFailed("The sign-in answer does not belong to this sign-in (state mismatch); start again.")
        issuer = query.get("iss")
        if issuer is not None and issuer.rstrip("/") != self.provider.issuer:
            raise LoginFailed("The sign-in answer comes from another identity provider (iss mismatch).")
        if issuer is None and self.provider.metadata.authorization_response_iss_parameter_supported:
            raise LoginFailed("The sign-in answer lacks the issuer it must carry (RFC 9207); start again.")
        if "error" in query:
            raise LoginFailed(
                _login_error_message(query["error"], query.get("error_description")), error=query["error"]
            )
        if not query.get("code"):
            raise LoginFailed("The sign-in answer has no authorization code; start again.")
        sent_at = time.time()
        with self._oauth(redirect_uri=pending.redirect_uri) as oauth:
            response = self._call(
                "authorization code exchange",
                oauth.fetch_token,
                self.provider.metadata.token_endpoint,
                grant_type="authorization_code",
                code=query["code"],
                code_verifier=pending.code_verifier,
                redirect_uri=pending.redirect_uri,
                **self._extra(),
            )
        return self.tokens_from_response(
            dict(response), grant="authorization_code", nonce=pending.nonce, sent_at=sent_at
        )

    def client_credentials(self) -> TokenSet:
        """Tokens for the client itself (bots, CI); needs a client secret."""
        if not self.settings.client_secret:
            raise ProviderError("The client credentials grant needs a client secret (MLFLOW_OIDC_CLIENT_SECRET).")
        scope = " ".join(s for s in self.settings.scopes if s not in ("openid", "offline_access"))
        sent_at = time.time()
        with self._oauth(scope=scope or None) as oauth:
            response = self._call(
                "client credentials request",
                oauth.fetch_token,
                self.provider.metadata.token_endpoint,
                grant_type="client_credentials",
                **self._extra(),
            )
        return self.tokens_from_response(dict(response), grant="client_credentials", sent_at=sent_at)

    def refresh(self, tokens: TokenSet) -> TokenSet:
        """Exchange the refresh token (which the provider may rotate) for a new token set."""
        if not tokens.refresh_token:
            raise ProviderError("This session has no refresh token.", error="invalid_grant")
        sent_at = time.time()
        with self._oauth() as oauth:
            response = self._call(
                "token refresh",
                oauth.refresh_token,
                self.provider.metadata.token_endpoint,
                refresh_token=tokens.refresh_token,
                # The provider spends a rotating refresh token when the request arrives: giving up on a slow
                # answer loses the new one, so the answer is waited for as long as callers would wait anyway.
                timeout=(self.settings.timeout, max(self.settings.timeout, self.settings.patience)),
                **self._extra(),
            )
        return self.tokens_from_response(dict(response), grant=tokens.grant, previous=tokens, sent_at=sent_at)

    def refresh_token_active(self, tokens: TokenSet) -> bool | None:
        """Whether the provider still accepts the refresh token (RFC 7662), without spending it; None: unknown."""
        endpoint = self.provider.metadata.raw.get("introspection_endpoint")
        if not endpoint or not tokens.refresh_token:
            return None
        with self._oauth() as oauth:
            response = self._call(
                "token introspection",
                oauth.introspect_token,
                endpoint,
                token=tokens.refresh_token,
                token_type_hint="refresh_token",  # noqa: S106 - a hint's name, not a secret
            )
        try:
            answer = response.json()
        except ValueError:
            return None
        if response.status_code != 200 or not isinstance(answer, dict) or "active" not in answer:
            return None  # e.g. introspection is not open to this client
        return answer["active"] is True

    def revoke(self, token: str, hint: str = "refresh_token") -> bool:
        """Revoke a token (RFC 7009); False when the provider offers no revocation endpoint."""
        endpoint = self.provider.metadata.revocation_endpoint
        if not endpoint:
            return False
        with self._oauth() as oauth:
            response = self._call("token revocation", oauth.revoke_token, endpoint, token=token, token_type_hint=hint)
        if response.status_code != 200:
            raise ProviderError(f"The identity provider answered HTTP {response.status_code} to the revocation.")
        return True

    def end_session_url(self, post_logout_redirect_uri: str | None = None, state: str | None = None) -> str | None:
        """RP-initiated logout URL naming this client; None when the provider has no end-session endpoint.

        Never with `id_token_hint`: the URL is shown to people (notebook output, terminals, browser history) and
        the ID token must not be. oidc-provider and Keycloak accept client_id + post_logout_redirect_uri instead.
        """
        endpoint = self.provider.metadata.end_session_endpoint
        if not endpoint:
            return None
        params = {"client_id": self.settings.client_id}
        if post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = post_logout_redirect_uri
        if state:
            params["state"] = state
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the provider (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def _post_json(oauth: OAuth2Session, url: str, body: dict[str, str], auth: Any, *, timeout: float) -> dict[str, Any]:
    response = oauth.post(url, data=body, auth=auth, timeout=timeout, headers={"Accept": "application/json"})
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and "error" in data:
        raise OAuthError(error=data["error"], description=data.get("error_description"))
    if response.status_code >= 400 or not isinstance(data, dict):
        response.raise_for_status()
        raise ValueError(f"not a JSON object (HTTP {response.status_code})")
    return data


def _login_error_message(error: str, description: str | None) -> str:
    if error == "access_denied":
        return "Sign-in was denied at the identity provider; start again to retry."
    detail = f": {description}" if description else ""
    return f"The identity provider ended the sign-in with {error}{detail}; start again."
