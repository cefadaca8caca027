"""Get real tokens from the local IdP for tests: users through the login page, the bot by client credentials."""

from __future__ import annotations

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from .idp_pages import authorize

# Never served: the IdP's redirect is read from its Location header, not followed.
REDIRECT_URI = "http://127.0.0.1:8976/callback"


def user_tokens(stack, username: str, scope: str = "openid profile email offline_access") -> dict:
    """Sign `username` in with auth code + PKCE through the IdP's own login page; return the token response."""
    client = OAuth2Session(
        stack.endpoints["clients"]["jupyter"]["client_id"],
        scope=scope,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
    )
    metadata = requests.get(f"{stack.issuer}/.well-known/openid-configuration", timeout=10).json()
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        metadata["authorization_endpoint"], code_verifier=verifier, nonce=generate_token(16), prompt="consent"
    )
    callback = authorize(url, username, stack.password(username))
    return dict(client.fetch_token(metadata["token_endpoint"], authorization_response=callback,
                                   code_verifier=verifier, state=state, timeout=10))  # fmt: skip


def bot_token(stack) -> dict:
    """The ci-bot's token by client credentials."""
    bot = stack.endpoints["clients"]["ci-bot"]
    client = OAuth2Session(bot["client_id"], bot["client_secret"])
    metadata = requests.get(f"{stack.issuer}/.well-known/openid-configuration", timeout=10).json()
    return dict(client.fetch_token(metadata["token_endpoint"], grant_type="client_credentials", timeout=10))
