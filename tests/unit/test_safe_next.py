"""After sign-in the browser goes back only to a path of this Jupyter server (no open redirect)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlflow_oidc_jupyter.server.signin import safe_next

HOME = "/user/alice/mlflow/"
EXT = SimpleNamespace(ui_path=HOME, serverapp=SimpleNamespace(base_url="/user/alice/"))


@pytest.mark.parametrize(
    "path", ["/user/alice/lab/tree/x.ipynb", "/user/alice/mlflow/?x=1#/experiments", "/user/alice/mlflow/oauth/status"]
)
def test_paths_of_this_server_are_kept(path):
    assert safe_next(EXT, path) == path


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "https://evil.example.org/",
        "//evil.example.org/user/alice/",
        "/\\evil.example.org",
        "/user/alice/\\..\\x",
        "/user/bob/lab",  # another user's server under the same hub
        "/user/alice/\r\nSet-Cookie: x=1",
        "user/alice/lab",
    ],
)
def test_anything_else_goes_to_the_mlflow_ui(value):
    assert safe_next(EXT, value) == HOME
