"""The login widget's states, asserted on the widget model, while real sign-ins run against the local stack."""

from __future__ import annotations

import html
import re
import threading
import time

import pytest
import requests

from mlflow_oidc_jupyter.kernel.login import KernelLogin
from mlflow_oidc_jupyter.kernel.magics import make_presenter
from mlflow_oidc_jupyter.kernel.widget import LoginWidget
from mlflow_oidc_jupyter.oidc import TokenCache

from .support.idp_pages import approve_device, authorize
from .support.oidc_sessions import settings_for
from .support.waiting import wait_until as wait_for

HREF = re.compile(r'<a href="([^"]+)" target="_blank"')


def link_of(widget: LoginWidget) -> str:
    match = HREF.search(widget.body.value)
    assert match, widget.body.value
    return html.unescape(match.group(1))


def shown(widget: LoginWidget) -> str:
    """Everything the widget renders: its HTML and its buttons' labels."""
    labels = " ".join(b.description for b in widget.buttons.children)
    return f"{widget.title.value} {widget.body.value} {labels}"


@pytest.fixture
def kernel(stack, isolated_home):
    """A kernel's sign-in (device flow) with its widget attached, closed afterwards."""
    login = KernelLogin()
    login.configure(settings_for(stack, isolated_home / ".cache" / "mlflow-oidc"), flow="device")
    widget = make_presenter(login, text=False)
    login.attach(widget)
    try:
        yield login, widget
    finally:
        login.close()


def approve_shown_code(widget: LoginWidget, stack, user: str) -> None:
    wait_for(lambda: widget.mode == "device")
    approve_device(link_of(widget), user, stack.password(user))


def test_device_flow_shows_link_code_and_countdown_then_the_signed_in_view(kernel, stack):
    login, widget = kernel
    assert widget.mode == "signed_out"
    assert [b.description for b in widget.buttons.children] == ["Sign in"]

    widget.sign_in_button.click()
    wait_for(lambda: widget.mode == "device")

    code = re.search(r'class="code">([A-Z0-9-]+)<', widget.body.value).group(1)
    assert f"user_code={code}" in link_of(widget)
    assert "Waiting for approval" in widget.body.value
    countdown = re.search(r"code expires in ([^<]+)<", widget.body.value).group(1)
    wait_for(lambda: re.search(r"code expires in ([^<]+)<", widget.body.value).group(1) != countdown, 3)
    assert [b.description for b in widget.buttons.children] == ["Cancel"]

    approve_device(link_of(widget), "bob", stack.password("bob"))
    wait_for(lambda: widget.mode == "signed_in")

    text = shown(widget)
    assert "Signed in as bob" in text
    for row in ("Roles</td><td>Default", "Access token expires in", "Session expires in", "Auto-refresh</td><td>on",
                "Last refresh", f"Tracking server</td><td>{stack.mlflow_url}"):  # fmt: skip
        assert row in widget.body.value
    assert [b.description for b in widget.buttons.children] == ["Sign out"]
    cache = TokenCache(login.session.settings.cache_dir)
    tokens = cache.load(cache.current_key(stack.issuer, "jupyter"))
    for secret in (tokens.access_token, tokens.refresh_token, tokens.id_token):
        assert secret[:16] not in text

    widget.sign_out_button.click()
    wait_for(lambda: widget.mode == "signed_out")
    assert [b.description for b in widget.buttons.children] == ["Sign in"]


def test_a_lost_session_shows_the_reason_and_sign_in_again(kernel, stack):
    login, widget = kernel
    login.sign_in()
    approve_shown_code(widget, stack, "bob")
    wait_for(lambda: widget.mode == "signed_in")
    # The refresh token is revoked (an admin ended the session): the next refresh fails for good.
    cache = TokenCache(login.session.settings.cache_dir)
    login.session.client.revoke(cache.load(cache.current_key(stack.issuer, "jupyter")).refresh_token)

    with pytest.raises(Exception, match="session .* has ended"):
        login.session.refresh()

    wait_for(lambda: widget.mode == "failed")
    assert "has ended" in widget.body.value
    assert [b.description for b in widget.buttons.children] == ["Sign in again"]
    widget.sign_in_button.click()
    approve_shown_code(widget, stack, "bob")
    wait_for(lambda: widget.mode == "signed_in")
    assert "Signed in as bob" in widget.title.value


def test_cancel_ends_the_sign_in_with_a_failure_view(kernel):
    login, widget = kernel
    login.sign_in()
    wait_for(lambda: widget.mode == "device")

    widget.cancel_button.click()

    wait_for(lambda: widget.mode == "failed")
    assert "cancelled" in widget.body.value
    assert not login.signing_in


def test_browser_flow_shows_a_sign_in_link_opening_in_a_new_tab(stack, isolated_home):
    login = KernelLogin()
    login.configure(settings_for(stack, isolated_home / ".cache" / "mlflow-oidc"), flow="browser")
    widget = make_presenter(login, text=False)
    login.attach(widget)
    try:
        login.sign_in()
        wait_for(lambda: widget.mode == "link")
        url = link_of(widget)
        assert url.startswith(f"{stack.issuer}/auth?")
        assert ">Sign in</a>" in widget.body.value

        requests.get(authorize(url, "alice", stack.password("alice")), timeout=10)

        wait_for(lambda: widget.mode == "signed_in")
        assert "Signed in as alice" in widget.title.value
        assert "Roles</td><td>Admin" in widget.body.value
    finally:
        login.close()


def test_closing_stops_the_widgets_ticker_thread(kernel):
    login, widget = kernel
    ticker = login.ticker.thread
    assert ticker is not None and ticker.is_alive()

    login.close()

    assert not ticker.is_alive()
    assert [t.name for t in threading.enumerate() if t.name.startswith("mlflow-oidc")] == []


def test_a_device_code_shows_only_in_the_widget_that_asked_and_one_ticker_serves_every_widget(stack, isolated_home):
    login = KernelLogin()
    login.configure(settings_for(stack, isolated_home / ".cache" / "mlflow-oidc"), flow="device")
    older, newer = make_presenter(login, text=False), make_presenter(login, text=False)
    login.attach(older)
    login.attach(newer)  # as a second %mlflow_login would
    try:
        assert [t.name for t in threading.enumerate()].count("mlflow-oidc-ticker") == 1

        newer.sign_in_button.click()
        approve_shown_code(newer, stack, "bob")
        wait_for(lambda: newer.mode == "signed_in" and older.mode == "signed_in")  # both live, pushed

        assert older.mode != "device" and 'class="code"' not in older.body.value
        assert [t.name for t in threading.enumerate()].count("mlflow-oidc-ticker") == 1
    finally:
        login.close()
    assert "mlflow-oidc-ticker" not in [t.name for t in threading.enumerate()]


def test_last_refresh_is_the_time_the_tokens_were_issued_and_counts_in_good_english(kernel, stack):
    login, widget = kernel
    login.sign_in()
    approve_shown_code(widget, stack, "bob")
    wait_for(lambda: widget.mode == "signed_in")
    assert "Last refresh</td><td>none yet (tokens from " in widget.body.value

    login.session.refresh()

    issued = time.strftime("%H:%M:%S", time.localtime(login.session.snapshot().issued_at))
    wait_for(lambda: f"Last refresh</td><td>{issued} (1 refresh)</td>" in widget.body.value, 5)
    # The provider announces the refresh token's idle limit (8 h here): the session's end is shown.
    assert re.search(r"Session expires in</td><td>[78] h \d\d min \(renewed by each refresh\)", widget.body.value)
    login.session.refresh()
    wait_for(lambda: "(2 refreshes)" in widget.body.value, 5)
