"""Every kind of session answers what the kernel asks of it (who holds the tokens, where to sign in, detach), so
the kernel never asks which class it holds."""

from __future__ import annotations

import pytest

from mlflow_oidc_jupyter.errors import LoginRequired, OIDCError
from mlflow_oidc_jupyter.hub.session import HubEndpoint, HubSession
from mlflow_oidc_jupyter.kernel.login import KernelLogin
from mlflow_oidc_jupyter.kernel.magics import refreshed_by
from mlflow_oidc_jupyter.oidc.broker import BrokerSession
from mlflow_oidc_jupyter.oidc.session import Session
from mlflow_oidc_jupyter.settings import Settings

# Nothing listens here: any request these tests made by mistake would fail at once.
BROKER = "http://127.0.0.1:9/user/alice/tracking/oauth/broker"


@pytest.fixture
def settings(tmp_path):
    return Settings.load(issuer="http://127.0.0.1:9/idp", client_id="jupyter", cache_dir=str(tmp_path))


def test_a_session_of_this_process_has_no_holder(settings):
    session = Session(settings, use_cache=False, background_refresh=False)
    assert (session.holder, session.holder_url, session.ui_url, session.login_url) == (None, None, None, None)
    assert session.holder_identity is None and not session.detached
    session.attach()
    with pytest.raises(OIDCError):
        session.sign_out_holder()


def test_the_jupyter_servers_session_names_its_holder_and_sign_in_page(settings):
    session = BrokerSession(settings, BROKER, "secret", background_refresh=False)
    assert session.holder == "the Jupyter server"
    assert session.holder_url == BROKER
    assert session.login_url == "/user/alice/tracking/oauth/login"
    assert session.cache is None


def test_a_detached_kernel_refuses_tokens_until_attached_again(settings):
    session = BrokerSession(settings, BROKER, "secret", background_refresh=False)
    session.logout()
    assert session.detached
    with pytest.raises(LoginRequired, match="%mlflow_login"):
        session.access_token()  # refused here, without asking the server
    session.attach()
    assert not session.detached


def test_the_hubs_session_names_the_hub(settings):
    endpoint = HubEndpoint(url="http://127.0.0.1:9/hub/api/mlflow-oidc/users/alice/token", api_token="t", user="alice")
    session = HubSession(settings, endpoint)
    assert session.holder == "the hub" and session.holder_url == endpoint.url


def test_who_refreshes_is_said_from_the_sessions_holder(settings):
    login = KernelLogin()
    try:
        login.session = BrokerSession(settings, BROKER, "secret", background_refresh=False)
        assert refreshed_by(login) == "by the Jupyter server"
        login.session = Session(settings, use_cache=False, background_refresh=False)
        assert refreshed_by(login) == "this kernel"
    finally:
        login.close()
