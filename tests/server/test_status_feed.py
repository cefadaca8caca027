"""The server's sign-in as browsers follow it: status long polls, straight-to-provider sign-in, the UI overlay."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.slow


def follow(server, since: int, until: float) -> list[dict]:
    """Long-poll the status as JupyterLab does until it says signed in; every answer seen."""
    seen: list[dict] = []
    while time.monotonic() < until and not (seen and seen[-1]["signed_in"]):
        answer = server.http().get(server.ui_url + "oauth/status", params={"since": since, "wait": 25}, timeout=40)
        seen.append(answer.json())
        since = seen[-1]["version"]
    return seen


def test_a_status_long_poll_answers_as_soon_as_the_server_signs_in(start_jupyter, stack):
    server = start_jupyter()
    before = server.status()
    assert before["signed_in"] is False and before["state"] == "signed_out"

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(follow, server, before["version"], time.monotonic() + 60)
        time.sleep(0.5)
        assert not waiting.done()  # held open: nothing changed yet
        started = time.monotonic()
        server.sign_in(stack, "alice")
        seen = waiting.result(timeout=90)

    assert time.monotonic() - started < 20  # pushed, not the poll's 25 s timeout
    assert [s["state"] for s in seen][-1] == "signed_in" and len(seen) <= 4
    answer = seen[-1]
    assert answer["signed_in"] is True and answer["username"] == "alice" and answer["roles"] == ["Admin"]
    assert answer["access_expires_at"] > time.time()


def test_the_launcher_sign_in_goes_straight_to_the_provider_or_straight_to_the_ui(start_jupyter, stack):
    server = start_jupyter()
    http = server.http()
    launcher = {"next": "/mlflow/", "reuse": "1"}

    signed_out = http.get(server.ui_url + "oauth/login", params=launcher, allow_redirects=False, timeout=30)
    server.sign_in(stack, "alice")
    signed_in = http.get(server.ui_url + "oauth/login", params=launcher, allow_redirects=False, timeout=30)

    assert signed_out.status_code == 302 and signed_out.headers["Location"].startswith(stack.issuer)
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/mlflow/"


def test_the_ui_page_loads_the_identity_overlay_served_under_our_path(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")
    http = server.http()

    index = http.get(server.ui_url, headers={"Accept-Encoding": "gzip"}, timeout=30)
    script = http.get(server.ui_url + "oauth/ui-overlay.js", timeout=30)
    anonymous = server.http()
    anonymous.headers.pop("Authorization")
    stranger = anonymous.get(server.ui_url + "oauth/ui-overlay.js", allow_redirects=False, timeout=30)

    assert index.status_code == 200
    assert '<script src="/mlflow/oauth/ui-overlay.js" defer></script></head>' in index.text
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "mlflow-oidc-banner" in script.text
    assert stranger.status_code in (302, 403)  # only Jupyter's users get it


def test_sign_out_from_jupyterlab_answers_json_with_the_providers_sign_out_address(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")

    answer = server.http().post(server.ui_url + "oauth/logout", headers={"Accept": "application/json"}, timeout=30)

    assert answer.status_code == 200
    assert answer.json()["signed_out"] is True
    assert answer.json()["end_session_url"].startswith(stack.issuer)
    assert server.status()["signed_in"] is False
