"""Where a kernel finds its Jupyter server's sign-in and MLflow UI, under any `prefix` and base_url."""

from __future__ import annotations

from mlflow_oidc_jupyter.broker_contract import (
    SECRET_ENV,
    UI_URL_ENV,
    URL_ENV,
    broker_from_env,
    server_paths,
    ui_url,
)


def test_the_paths_follow_the_broker_url_under_a_prefix_and_base_url():
    broker = "http://127.0.0.1:8888/user/alice/tracking/oauth/broker"
    assert server_paths(broker, {}) == ("/user/alice/tracking/oauth/login", "/user/alice/tracking/")
    assert ui_url(broker) == "http://127.0.0.1:8888/user/alice/tracking/"


def test_a_broker_url_of_another_shape_falls_back_to_the_exported_ui_url_and_its_prefix():
    env = {UI_URL_ENV: "http://127.0.0.1:8888/user/alice/tracking/"}
    assert server_paths("http://127.0.0.1:9/elsewhere", env) == (
        "/user/alice/tracking/oauth/login",
        "/user/alice/tracking/",
    )


def test_without_any_hint_the_default_prefix_is_used():
    assert server_paths("http://127.0.0.1:9/elsewhere", {}) == ("/mlflow/oauth/login", "/mlflow/")


def test_a_broker_needs_both_its_url_and_its_secret():
    assert broker_from_env({URL_ENV: "http://127.0.0.1:1/mlflow/oauth/broker"}) is None
    assert broker_from_env({URL_ENV: "u", SECRET_ENV: "s"}) == ("u", "s")
