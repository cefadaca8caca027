"""A kernel uses its Jupyter server's sign-in when the server offers one for the same provider, else its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_oidc_jupyter.broker_contract import SECRET_ENV, URL_ENV
from mlflow_oidc_jupyter.kernel.choosing import choose_source
from mlflow_oidc_jupyter.kernel.sources import OwnSignIn, ServerSignIn
from mlflow_oidc_jupyter.settings import Settings

BROKER = {URL_ENV: "http://127.0.0.1:8888/user/alice/tracking/oauth/broker", SECRET_ENV: "s"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(
        env={}, config_file=tmp_path / "no-config.toml", issuer="https://idp.example.org", client_id="jupyter",
        tracking_uri="https://mlflow.example.org", cache_dir=str(tmp_path),
    )  # fmt: skip


def test_the_servers_sign_in_is_used_when_it_offers_one(settings):
    source, new = choose_source(settings, None, None, env=BROKER)
    assert isinstance(source, ServerSignIn) and new
    assert source.refreshed_by == "by the Jupyter server"
    assert source.session.address.login_path == "/user/alice/tracking/oauth/login"


def test_a_chosen_flow_or_no_server_means_the_kernel_signs_in_itself(settings):
    device, _ = choose_source(settings, "device", None, env=BROKER)
    alone, _ = choose_source(settings, None, None, env={})
    assert isinstance(device, OwnSignIn) and device.flow == "device"
    assert isinstance(alone, OwnSignIn) and alone.flow == "device"


def test_another_provider_than_the_servers_means_the_kernels_own_sign_in(settings):
    env = {**BROKER, "MLFLOW_OIDC_ISSUER": "https://other-idp.example.org"}
    source, _ = choose_source(settings, None, None, env=env)
    assert isinstance(source, OwnSignIn)


def test_a_source_that_still_fits_is_kept(settings):
    server, _ = choose_source(settings, None, None, env=BROKER)
    assert choose_source(settings, "browser", server, env=BROKER) == (server, False)
    own, _ = choose_source(settings, "device", None, env={})
    again, new = choose_source(settings, "browser", own, env={})
    assert again.session is own.session and again.flow == "browser" and not new
