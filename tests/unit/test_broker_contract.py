"""The broker's contract: a kernel finds its server's broker, sign-in page and UI under whatever prefix is set."""

from __future__ import annotations

from mlflow_oidc_jupyter.broker_contract import SECRET_ENV, URL_ENV, BrokerAddress, broker_from_env, token_digest


def test_a_kernel_of_a_server_with_the_extension_finds_its_broker():
    address = broker_from_env({URL_ENV: "http://127.0.0.1:8888/mlflow/oauth/broker", SECRET_ENV: "s3cret"})
    assert address == BrokerAddress("http://127.0.0.1:8888/mlflow/oauth/broker", "s3cret")
    assert "s3cret" not in repr(address)


def test_a_kernel_without_both_variables_has_no_broker():
    assert broker_from_env({}) is None
    assert broker_from_env({URL_ENV: "http://127.0.0.1:8888/mlflow/oauth/broker"}) is None


def test_ui_and_sign_in_paths_follow_base_url_and_prefix():
    address = BrokerAddress("http://127.0.0.1:8888/user/alice/tracking/oauth/broker", "s")
    assert address.ui_path == "/user/alice/tracking/"
    assert address.login_path == "/user/alice/tracking/oauth/login"


def test_tokens_are_named_by_digest_never_sent_back():
    digest = token_digest("header.payload.signature")
    assert len(digest) == 64 and "payload" not in digest
    assert digest == token_digest("header.payload.signature") != token_digest("other")
