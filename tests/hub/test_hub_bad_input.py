"""A hub without auth_state, a sign-in without a refresh token, a provider refusing the refresh: each is said
clearly in the MLflow UI and in the notebook's sign-in widget, and MLflow never runs as anyone else."""

from __future__ import annotations

import json

import pytest

from ..support.kernels import run_in_kernel
from .conftest import forget_refresh_tokens, sign_in_again

pytestmark = [pytest.mark.slow, pytest.mark.browser]

#: In a new kernel: MLflow until it is refused (the server's last token lives 5 s), then the sign-in widget (text).
CHECK = """
import time, mlflow
deadline = time.monotonic() + 60
while True:
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as exc:
        print("REFUSED:", exc)
        break
    if time.monotonic() > deadline:
        print("STILL SIGNED IN")
        break
    time.sleep(1)
ip = get_ipython()
ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
try:
    ip.run_line_magic("mlflow_login", "--text --timeout 3")
except Exception as exc:
    print("LOGIN:", exc)
"""


#: The subject the kernel's session speaks for (through its server, from the hub).
WHO = (
    "from mlflow_oidc_jupyter.oidc import get_default_session\nsession = get_default_session()\n"
    "session.access_token()\nprint(session.identity.subject)"
)


def refused_everywhere(user, needle: str) -> None:
    """The kernel's MLflow call, its widget and the MLflow UI page all say `needle`; nobody is signed in."""
    out = run_in_kernel(user, CHECK, timeout=180)
    assert "REFUSED:" in out and "STILL SIGNED IN" not in out, out
    kernel_error, widget = out.split("REFUSED:", 1)[1].split("\n", 1)
    assert needle in kernel_error, out
    assert needle in widget and "Signed in as" not in widget, out
    page = user.context.new_page()
    try:
        response = page.goto(user.ui_url)
        assert response is not None and response.status == 401
        assert needle in page.content()
    finally:
        page.close()


def test_a_hub_without_auth_state_says_how_to_turn_it_on(hub_stack, hub_users):
    settings = hub_stack.run_dir / "hub" / "settings.json"
    original = settings.read_text()
    settings.write_text(json.dumps({**json.loads(original), "enable_auth_state": False}))
    try:
        hub_stack.restart("hub")
        refused_everywhere(hub_users["alice"], "enable_auth_state")
    finally:
        settings.write_text(original)
        hub_stack.restart("hub")
    sign_in_again(hub_users["alice"], hub_stack)


def test_a_sign_in_without_refresh_token_says_the_provider_must_issue_one(hub_stack, hub_users):
    alice = hub_users["alice"]
    idp_config = hub_stack.run_dir / "idp.json"
    original = idp_config.read_text()
    config = json.loads(original)
    config["clients"]["jupyterhub"]["grant_types"] = ["authorization_code"]  # a provider set up without refresh
    idp_config.write_text(json.dumps(config))
    try:
        hub_stack.restart("idp")
        sign_in_again(alice, hub_stack)  # the hub's next refresh is refused, so it asks for a new sign-in
        refused_everywhere(alice, "holds no refresh token")
    finally:
        idp_config.write_text(original)
        hub_stack.restart("idp")
    sign_in_again(alice, hub_stack)


def test_a_provider_refusing_the_refresh_asks_for_a_new_sign_in_at_the_hub(hub_stack, hub_users):
    alice = hub_users["alice"]
    subject = run_in_kernel(alice, WHO).strip()
    forgotten = []
    hub_stack.restart(
        "idp", while_stopped=lambda: forgotten.append(forget_refresh_tokens(hub_stack.run_dir, "jupyterhub", subject))
    )
    assert forgotten[0] >= 1

    refused_everywhere(alice, "has ended (invalid_grant)")
    refusals = [line for line in hub_stack.log("idp").splitlines() if "token refused" in line]
    assert any("client=jupyterhub" in line and "invalid_grant" in line for line in refusals)

    sign_in_again(alice, hub_stack)  # the hub sends her browser to the provider; MLflow works again
    assert "REFUSED" not in run_in_kernel(alice, "import mlflow\nmlflow.search_experiments(max_results=1)\nprint('ok')")
