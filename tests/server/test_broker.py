"""The kernel broker: kernels of a signed-in server use its session; only the server refreshes tokens."""

from __future__ import annotations

import json

import pytest
import requests

from ..support.kernels import run_in_kernel

pytestmark = pytest.mark.slow

#: The kernel side of the contract, as a notebook would use it (printing what it saw, never the token).
ASK_BROKER = """
import hashlib, json, os, requests
def ask(**params):
    answer = requests.get(os.environ["MLFLOW_OIDC_BROKER_URL"], params=params, timeout=30,
                          headers={"X-MLflow-OIDC-Broker": os.environ["MLFLOW_OIDC_BROKER_SECRET"]})
    return answer.status_code, answer.json()
def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()
def mlflow_status(token):
    return requests.get(os.environ["MLFLOW_TRACKING_URI"] + "/api/2.0/mlflow/experiments/search",
                        params={"max_results": 1}, headers={"Authorization": "Bearer " + token}, timeout=30).status_code
"""


def refresh_grants(stack) -> int:
    return stack.log("idp").count("grant_type=refresh_token")


@pytest.fixture(scope="module")
def alice_server(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")
    return server


def test_a_kernel_of_a_signed_in_server_uses_its_session_without_signing_in(alice_server, stack):
    out = run_in_kernel(alice_server, ASK_BROKER + """
status, answer = ask()
print(json.dumps({"status": status, "user": answer["identity"]["username"], "keys": sorted(answer),
                  "mlflow": mlflow_status(answer["access_token"]), "tracking_uri": os.environ["MLFLOW_TRACKING_URI"],
                  "issuer": os.environ["MLFLOW_OIDC_ISSUER"]}))
""")  # fmt: skip

    seen = json.loads(out)
    keys = set(seen.pop("keys"))
    assert seen == {"status": 200, "user": "alice", "mlflow": 200, "tracking_uri": stack.mlflow_url,
                    "issuer": stack.issuer}  # fmt: skip
    assert {"access_token", "expires_at", "identity", "token_type", "state", "version", "refresh_expires_at"} <= keys
    assert not {"refresh_token", "id_token"} & keys  # the kernel never gets the server's other tokens


def test_a_token_the_tracking_server_rejected_is_refreshed_once_by_the_server(alice_server, stack):
    before = refresh_grants(stack)

    out = run_in_kernel(alice_server, ASK_BROKER + """
_, first = ask()
_, second = ask(rejected=fingerprint(first["access_token"]))
_, third = ask(rejected=fingerprint(first["access_token"]))
print(json.dumps({"renewed": second["access_token"] != first["access_token"],
                  "stable": third["access_token"] == second["access_token"],
                  "mlflow": mlflow_status(second["access_token"])}))
""")  # fmt: skip

    assert json.loads(out) == {"renewed": True, "stable": True, "mlflow": 200}
    assert refresh_grants(stack) == before + 1


def test_the_broker_refuses_callers_without_the_servers_secret(alice_server):
    url = alice_server.ui_url + "oauth/broker"

    wrong = requests.get(url, headers={"X-MLflow-OIDC-Broker": "guess"}, timeout=10)
    jupyter_user = alice_server.http().get(url, timeout=10)

    assert wrong.status_code == 403 and "access_token" not in wrong.text
    assert jupyter_user.status_code == 403 and "access_token" not in jupyter_user.text


def test_a_signed_out_server_tells_the_kernel_where_to_sign_in(jupyter):
    out = run_in_kernel(jupyter, ASK_BROKER + "print(json.dumps(ask()))")

    status, answer = json.loads(out)
    assert status == 401
    assert answer["error"] == "login_required"
    assert answer["login_url"].startswith("/mlflow/oauth/login?next=")


@pytest.fixture(scope="module")
def short_lived_stack(make_stack):
    """A stack whose access tokens live 10 s, so a server refreshes several times within a test."""
    return make_stack(env={"IDP_ACCESS_TOKEN_TTL": "10", "IDP_ID_TOKEN_TTL": "10"}, name="short-tokens")


def test_a_kernel_keeps_working_across_server_side_refreshes(start_jupyter, short_lived_stack):
    server = start_jupyter(on=short_lived_stack)
    server.sign_in(short_lived_stack, "alice")

    out = run_in_kernel(server, ASK_BROKER + """
import time
tokens, statuses = set(), set()
deadline = time.time() + 22
while time.time() < deadline:
    _, answer = ask()
    tokens.add(fingerprint(answer["access_token"]))
    statuses.add(mlflow_status(answer["access_token"]))
    time.sleep(1)
print(json.dumps({"tokens": len(tokens), "statuses": sorted(statuses)}))
""", timeout=90)  # fmt: skip

    seen = json.loads(out)
    assert seen["statuses"] == [200]
    assert seen["tokens"] >= 2
    assert refresh_grants(short_lived_stack) >= 2
    assert "token refused" not in short_lived_stack.log("idp")  # one refresher: no rotated token reused
