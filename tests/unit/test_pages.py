"""The extension's own pages show every value as text: nothing from a URL, an error or a user name becomes markup."""

from __future__ import annotations

from mlflow_oidc_jupyter.server import pages

HOSTILE = "<script>alert(1)</script>' onmouseover='x"


def test_messages_details_and_links_are_escaped():
    html = pages.signin_failed(HOSTILE, "/mlflow/oauth/login?next=" + HOSTILE)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "' onmouseover='x" not in html  # cannot close the href attribute


def test_the_signed_out_page_carries_the_ui_fragment_through_the_sign_in():
    html = pages.signed_out("/mlflow/oauth/login?next=%2Fmlflow%2F", reason=HOSTILE)
    assert "id='mlflow-oidc-action' href='/mlflow/oauth/login?next=%2Fmlflow%2F'" in html
    assert "encodeURIComponent(location.hash)" in html
    assert "<script>alert(1)" not in html


def test_the_sign_out_form_keeps_tornados_xsrf_input_and_escapes_the_user():
    xsrf = '<input type="hidden" name="_xsrf" value="2|abc"/>'
    html = pages.confirm_logout(HOSTILE, "/mlflow/oauth/logout", xsrf)
    assert f"<form method='post' action='/mlflow/oauth/logout'>{xsrf}" in html
    assert "<script>alert(1)" not in html
