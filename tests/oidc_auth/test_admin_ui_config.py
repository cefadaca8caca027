"""The one answer of mlflow-oidc-auth our proxy rewrites: its admin UI's "are you signed in?" flag."""

from __future__ import annotations

import json

from mlflow_oidc_jupyter.server import forwarding


def test_its_admin_ui_config_says_signed_in_because_every_proxied_request_carries_a_token():
    upstream = {"basePath": "/mlflow", "uiPath": "/mlflow/oidc/ui", "authenticated": False, "provider": "x"}

    rewrite = forwarding.rewriter("oidc/ui/config.json")

    assert rewrite is not None
    assert json.loads(rewrite(json.dumps(upstream).encode())) == {**upstream, "authenticated": True}


def test_anything_else_at_that_path_passes_unchanged():
    rewrite = forwarding.rewriter("oidc/ui/config.json")
    assert rewrite is not None

    for body in (b"not json", b"[1, 2]", b'{"basePath": "/mlflow"}'):
        assert rewrite(body) == body


def test_other_paths_are_not_rewritten():
    assert forwarding.rewriter("oidc/ui/user") is None
    assert forwarding.rewriter("api/2.0/mlflow/oidc/ui/config.json") is None
    assert forwarding.rewriter("static-files/static/js/main.js") is forwarding.rewrite_ui_script
