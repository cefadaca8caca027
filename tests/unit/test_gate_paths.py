"""The gate reads a request path every way an upstream might route it, and the strictest reading decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack.gate.policy import Policy, interpretations

POLICY = Policy.load(Path(__file__).resolve().parents[2] / "stack" / "gate" / "policy.yaml")  # the shipped one


def test_a_plain_path_has_one_reading_in_lower_case():
    assert interpretations("/API/2.0/mlflow/Runs/get?run_id=1#x") == ["/api/2.0/mlflow/runs/get"]


def test_encoded_and_dotted_paths_are_read_decoded_and_resolved():
    readings = interpretations("/api/2.0/mlflow/x/%2e%2e/experiments%252Fdelete")
    assert "/api/2.0/mlflow/experiments/delete" in readings  # decoded twice, dots resolved
    assert readings[0] == "/api/2.0/mlflow/x/%2e%2e/experiments%252fdelete"  # as sent


def test_duplicate_trailing_and_back_slashes_are_read_as_one_slash():
    assert interpretations("//api\\2.0//mlflow/experiments/delete/") == ["/api/2.0/mlflow/experiments/delete"]


def test_absolute_form_request_targets_are_read_by_their_path():
    assert interpretations("http://mlflow:5000/api/2.0/mlflow/experiments/delete?x=1") == [
        "/api/2.0/mlflow/experiments/delete"
    ]


@pytest.mark.parametrize(
    "uri",
    [
        "/api/2.0/mlflow/experiments/delete",
        "/api/2.0/mlflow/experiments/DELETE",
        "/api/2.0/mlflow/experiments%2Fdelete",
        "/api/2.0/mlflow/experiments/%2564elete",
        "/api/2.0/mlflow/runs/../experiments/delete",
        "/api/2.0/mlflow/experiments//delete/",
    ],
)
def test_every_spelling_of_a_guarded_path_needs_the_role(uri):
    denied = POLICY.decide("POST", uri, "bob", ["Default"])
    assert not denied.allowed and denied.rule in ("delete", "unknown-route")  # an encoded reading is no route
    assert POLICY.decide("POST", uri, "alice", ["Admin"]).allowed


def test_ordinary_use_is_allowed_to_default_users():
    decision = POLICY.decide("POST", "/api/2.0/mlflow/runs/log-metric", "bob", ["Default"])
    assert decision.allowed and decision.rule == "use"


def test_a_path_that_is_no_route_of_mlflow_needs_admin_except_to_read_it():
    denied = POLICY.decide("POST", "/api/2.0/mlflow/no-such-route", "bob", ["Default"])
    assert not denied.allowed and denied.rule == "unknown-route"
    assert POLICY.decide("GET", "/api/2.0/mlflow/no-such-route", "bob", ["Default"]).allowed
