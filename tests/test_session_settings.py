"""Settings resolve from arguments, then MLFLOW_OIDC_* variables, then the config file; errors say how to fix."""

from __future__ import annotations

import pytest

from mlflow_oidc_jupyter.errors import ConfigError
from mlflow_oidc_jupyter.settings import Settings


def test_explicit_arguments_beat_environment_which_beats_the_config_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        'issuer = "https://file.example"\nclient_id = "from-file"\nscopes = ["profile", "offline_access"]\n'
        'cache_dir = "/srv/cache/from-file"\n'
    )
    env = {"MLFLOW_OIDC_CONFIG": str(config), "MLFLOW_OIDC_CLIENT_ID": "from-env", "MLFLOW_OIDC_LEEWAY": "5"}

    settings = Settings.load(env=env, issuer="https://arg.example/realms/x/")

    assert settings.issuer == "https://arg.example/realms/x"
    assert settings.client_id == "from-env"
    assert settings.scopes == ("openid", "profile", "offline_access")
    assert str(settings.cache_dir) == "/srv/cache/from-file" and settings.leeway == 5


def test_a_missing_issuer_names_the_variable_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"`issuer` is missing.*MLFLOW_OIDC_ISSUER.*config.toml"):
        Settings.load(env={"MLFLOW_OIDC_CLIENT_ID": "jupyter", "XDG_CONFIG_HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_OIDC_ISSUER": "http://idp.example.org"}, "must use https"),
        ({"MLFLOW_OIDC_ISSUER": "idp.example.org"}, "http\\(s\\) URL"),
        ({"MLFLOW_OIDC_VERIFY": "maybe"}, "`verify` must be true or false"),
        ({"MLFLOW_OIDC_CA_BUNDLE": "/no/such/ca.pem"}, "CA bundle"),
        ({"MLFLOW_OIDC_REFRESH_MARGIN": "soon"}, "`refresh_margin` must be a number"),
    ],
)
def test_invalid_values_are_refused_with_the_setting_named(tmp_path, env, message):
    base = {"MLFLOW_OIDC_ISSUER": "https://idp.example.org", "MLFLOW_OIDC_CLIENT_ID": "jupyter"}
    with pytest.raises(ConfigError, match=message):
        Settings.load(env={**base, **env, "XDG_CONFIG_HOME": str(tmp_path)})


def test_the_client_secret_never_shows_in_repr():
    settings = Settings(issuer="https://idp.example.org", client_id="bot", client_secret="s3cr3t-value")
    assert "s3cr3t-value" not in repr(settings)


def test_plain_http_is_allowed_on_loopback_only():
    assert Settings(issuer="http://127.0.0.1:8080", client_id="jupyter").issuer == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError):
        Settings(issuer="http://10.0.0.1", client_id="jupyter")
