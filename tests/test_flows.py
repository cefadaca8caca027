"""Sign-in flows against the real local IdP, and ID token validation against keys we control."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from mlflow_oidc_jupyter.errors import LoginFailed, ProviderError, TokenValidationError
from mlflow_oidc_jupyter.oidc import OIDCClient, Provider, Session, SessionState, TokenValidator
from mlflow_oidc_jupyter.settings import Settings

from .support.idp_pages import IdPPageError, approve_device, authorize, deny_device
from .support.oidc_sessions import browser_sign_in, device_sign_in, settings_for

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def session(stack, tmp_path) -> Iterator[Session]:
    s = Session(settings_for(stack, tmp_path / "cache"))
    yield s
    s.close()


def test_device_flow_shows_a_code_and_signs_in_with_the_verified_identity(stack, session):
    states: list[SessionState] = []
    session.add_listener(lambda snap: states.append(snap.state))

    shown = device_sign_in(session, stack, "alice")

    assert shown[0].user_code and shown[0].verification_uri.startswith(stack.issuer)
    assert shown[0].user_code in shown[0].verification_uri_complete
    identity = session.identity
    assert (identity.username, identity.roles, identity.issuer) == ("alice", ("Admin",), stack.issuer)
    assert UUID.match(identity.subject), "the subject is the IdP's stable id, not the username"
    assert states == [SessionState.SIGNING_IN, SessionState.SIGNED_IN]
    assert session.access_token().count(".") == 2


def test_a_device_sign_in_denied_at_the_idp_fails_and_stays_signed_out(session):
    def deny(device) -> None:
        threading.Thread(target=deny_device, args=(device.verification_uri_complete,)).start()

    with pytest.raises(LoginFailed, match="denied"):
        session.login_device(deny)
    assert session.state is SessionState.SIGNED_OUT
    assert not session.signed_in


def test_browser_flow_with_pkce_and_loopback_redirect_signs_in(stack, session):
    browser_sign_in(session, stack, "bob")

    assert (session.identity.username, session.identity.roles) == ("bob", ("Default",))
    assert session.state is SessionState.SIGNED_IN


def test_auth_code_flow_completes_at_someone_elses_redirect_uri(stack, session):
    pending = session.start_login("http://127.0.0.1:9/lab/mlflow/oauth/callback")
    assert session.state is SessionState.SIGNING_IN
    assert "code_challenge_method=S256" in pending.url and "nonce=" in pending.url

    callback = authorize(pending.url, "alice", stack.password("alice"))
    identity = session.finish_login(pending, callback)

    assert identity.username == "alice"
    assert parse_qs(urlsplit(callback).query)["iss"] == [stack.issuer]


def test_auth_code_callback_with_another_state_or_issuer_is_refused(stack, session):
    pending = session.start_login("http://127.0.0.1:9/oauth/callback")
    callback = authorize(pending.url, "alice", stack.password("alice"))

    with pytest.raises(LoginFailed, match="state mismatch"):
        session.finish_login(pending, _with_param(callback, state="forged"))
    with pytest.raises(LoginFailed, match="iss mismatch"):
        session.finish_login(pending, _with_param(callback, iss="http://127.0.0.1:1"))
    assert not session.signed_in


def test_a_failed_second_sign_in_keeps_the_first_one(stack, session):
    browser_sign_in(session, stack, "bob")
    pending = session.start_login("http://127.0.0.1:9/oauth/callback")
    callback = authorize(pending.url, "alice", stack.password("alice"))

    with pytest.raises(LoginFailed, match="state mismatch"):
        session.finish_login(pending, _with_param(callback, state="forged"))

    assert session.state is SessionState.SIGNED_IN
    assert session.identity.username == "bob"
    assert session.access_token()


def test_sign_in_denied_at_the_idp_is_reported(stack, session):
    pending = session.start_login("http://127.0.0.1:9/oauth/callback")
    callback = _with_param(
        f"http://127.0.0.1:9/oauth/callback?state={pending.state}&iss={stack.issuer}", error="access_denied"
    )

    with pytest.raises(LoginFailed, match="denied"):
        session.finish_login(pending, callback)
    assert session.state is SessionState.SIGNED_OUT


def test_client_credentials_sign_the_bot_in_as_itself(stack, tmp_path):
    bot = Session(settings_for(stack, tmp_path / "cache", client="ci-bot"), background_refresh=False)

    identity = bot.login_client_credentials()

    assert identity.username == "ci-bot" and identity.roles == ("Default",)
    assert bot.access_token().count(".") == 2


def test_client_credentials_without_a_secret_say_what_is_missing(stack, tmp_path):
    client = OIDCClient(settings_for(stack, tmp_path, client="jupyter"))
    with pytest.raises(ProviderError, match="MLFLOW_OIDC_CLIENT_SECRET"):
        client.client_credentials()


def test_wrong_password_at_the_device_page_leaves_the_device_code_unapproved(stack, session):
    device = session.client.start_device_authorization()

    with pytest.raises(IdPPageError, match="login as 'alice' failed"):
        approve_device(device.verification_uri_complete, "alice", "not-her-password")

    with pytest.raises(ProviderError) as poll:
        session.client.poll_device_token(device)
    assert poll.value.error == "authorization_pending"  # no tokens for this code: nobody signed in
    assert not session.signed_in


def test_logout_revokes_the_refresh_token_and_offers_an_end_session_url(stack, session):
    browser_sign_in(session, stack, "alice")
    tokens = session._tokens

    url = session.logout()

    assert url.startswith(f"{stack.issuer}/session/end?") and "client_id=jupyter" in url
    assert "id_token_hint" not in url and tokens.id_token not in url  # the URL is shown to people
    with pytest.raises(ProviderError) as refused:
        session.client.refresh(tokens)
    assert refused.value.error == "invalid_grant"
    assert session.state is SessionState.SIGNED_OUT


# -- ID token validation, against an issuer whose keys the test holds ----------------------------------------


class KeyServer:
    """A real issuer endpoint (discovery + JWKS over HTTP) serving keys the test controls."""

    def __init__(self) -> None:
        self.keys = [RSAKey.generate_key(2048, parameters={"kid": "k1", "alg": "RS256", "use": "sig"})]
        self.jwks_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": outer.issuer,
                        "token_endpoint": f"{outer.issuer}/token",
                        "jwks_uri": f"{outer.issuer}/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                else:
                    outer.jwks_requests += 1
                    body = {"keys": [k.as_dict(private=False) for k in outer.keys]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def claims(self, **changes) -> dict:
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": "s-1", "aud": "jupyter", "iat": now, "exp": now + 300, "nonce": "n-1"}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, key=None, header=None, **changes) -> str:
        key = key or self.keys[0]
        return jwt.encode({"alg": "RS256", "kid": key.kid, **(header or {})}, self.claims(**changes), key)


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def validator(key_server, tmp_path) -> TokenValidator:
    settings = Settings(issuer=key_server.issuer, client_id="jupyter", cache_dir=tmp_path, leeway=5)
    return TokenValidator(settings, Provider(key_server.issuer))


def test_an_id_token_signed_by_the_issuer_key_is_accepted(key_server, validator):
    claims = validator.id_token_claims(key_server.sign(), nonce="n-1")
    assert claims["sub"] == "s-1"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda ks: ks.sign(key=RSAKey.generate_key(2048, parameters={"kid": "k1"})), id="other-key"),
        pytest.param(lambda ks: ks.sign(iss="http://127.0.0.1:1"), id="wrong-iss"),
        pytest.param(lambda ks: ks.sign(aud="another-client"), id="wrong-aud"),
        pytest.param(lambda ks: ks.sign(exp=int(time.time()) - 60), id="expired"),
        pytest.param(lambda ks: ks.sign(nonce="replayed"), id="wrong-nonce"),
        pytest.param(lambda ks: ks.sign(nonce=None), id="missing-nonce"),
        pytest.param(lambda ks: _unsigned(ks.claims()), id="alg-none"),
        pytest.param(lambda ks: _hmac_with_public_key(ks), id="hs256-with-public-key"),
    ],
)
def test_a_forged_or_misdirected_id_token_is_rejected(key_server, validator, forge):
    with pytest.raises(TokenValidationError, match="rejected|nonce"):
        validator.id_token_claims(forge(key_server), nonce="n-1")


def test_a_new_signing_key_refetches_the_jwks_once_per_unknown_kid(key_server, validator):
    validator.id_token_claims(key_server.sign(), nonce="n-1")
    key_server.keys = [RSAKey.generate_key(2048, parameters={"kid": "k2", "alg": "RS256", "use": "sig"})]

    claims = validator.id_token_claims(key_server.sign(), nonce="n-1")

    assert claims["sub"] == "s-1"
    assert key_server.jwks_requests == 2
    stranger = RSAKey.generate_key(2048, parameters={"kid": "k3"})
    for _ in range(3):  # a kid the issuer does not publish costs one refetch, not one per token
        with pytest.raises(TokenValidationError):
            validator.id_token_claims(key_server.sign(key=stranger), nonce="n-1")
    assert key_server.jwks_requests == 3


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(claims: dict) -> str:
    return f"{_b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{_b64(json.dumps(claims).encode())}."


def _hmac_with_public_key(ks: KeyServer) -> str:
    secret = ks.keys[0].as_pem(private=False)
    header = _b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    signing_input = f"{header}.{_b64(json.dumps(ks.claims()).encode())}"
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _with_param(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | params
    return urlunsplit(parts._replace(query=urlencode(query)))
