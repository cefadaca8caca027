"""MLflow's server side of the stack: which requests it rewrites or refuses, and how (no server needed)."""

from __future__ import annotations

import json

import pytest
from mlflow_oidc_identity.rules import (
    Identity,
    Refused,
    classify,
    overwrite_refused,
    parse_json,
    refuse_identity_keys,
    stamp_identity,
    tag_keys,
)

BOB = Identity("bob", "sub-bob", "http://idp", frozenset())
ALICE = Identity("alice", "sub-alice", "http://idp", frozenset({"overwrite-artifacts"}))


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/api/2.0/mlflow/runs/create", "create-run"),
        ("POST", "/ajax-api/2.0/mlflow/runs/create-promptlab-run", "create-run"),
        ("POST", "//api/2.0//mlflow/RUNS/set-tag/", "tag-key"),
        ("POST", "/api/2.0/mlflow/runs/log-batch", "tags"),
        ("POST", "/api/2.0/mlflow/logged-models", "create-model"),
        ("PATCH", "/api/2.0/mlflow/logged-models/m-1/tags", "tags"),
        ("DELETE", "/api/2.0/mlflow/logged-models/m-1/tags/mlflow.user", "path-key"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a.txt", "artifact"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/complete/1/r/artifacts/a.txt", "artifact"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact", "run-artifact"),
    ],
)
def test_the_calls_that_write_identity_or_artifacts_are_recognised(method, path, kind):
    assert classify(method, path).kind == kind


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/2.0/mlflow/runs/get"), ("GET", "/api/2.0/mlflow-artifacts/artifacts/a"), ("POST", "/graphql")],
)
def test_everything_else_passes_untouched(method, path):
    assert classify(method, path) is None


def test_a_static_prefix_is_part_of_the_path():
    assert classify("POST", "/mlflow/api/2.0/mlflow/runs/create", "/mlflow/").kind == "create-run"
    assert classify("POST", "/api/2.0/mlflow/runs/create", "/mlflow") is None


def test_a_new_run_gets_the_verified_identity_and_nothing_the_client_claimed():
    doc = {"experiment_id": "1", "userId": "alice", "tags": [{"key": "mlflow.user", "value": "alice"},
                                                             {"key": "team", "value": "x"}]}  # fmt: skip
    out = stamp_identity(doc, BOB, run=True)
    assert out["user_id"] == "bob" and "userId" not in out
    assert {t["key"]: t["value"] for t in out["tags"]} == {
        "team": "x",
        "mlflow.user": "bob",
        "oidc.sub": "sub-bob",
        "oidc.issuer": "http://idp",
    }


def test_a_logged_model_gets_the_tags_but_no_user_id_field():
    assert "user_id" not in stamp_identity({"experiment_id": "1"}, BOB, run=False)


@pytest.mark.parametrize("key", ["mlflow.user", "oidc.sub", "oidc.issuer"])
def test_identity_tags_cannot_be_set_or_deleted_afterwards(key):
    for kind, doc in [("tag-key", {"key": key}), ("tags", {"tags": [{"key": "a"}, {"key": key}]})]:
        with pytest.raises(Refused) as refused:
            refuse_identity_keys(tag_keys(kind, doc))
        assert refused.value.status == 403 and key in refused.value.message


def test_a_double_encoded_body_is_read_as_mlflow_reads_it():
    assert parse_json(json.dumps(json.dumps({"key": "mlflow.user"})).encode()) == {"key": "mlflow.user"}
    with pytest.raises(Refused):
        parse_json(b"[1]")


def test_overwriting_needs_the_permission():
    assert overwrite_refused(ALICE, "a.txt") is None
    assert "overwrite-artifacts" in overwrite_refused(BOB, "a.txt").message
    assert overwrite_refused(None, "a.txt").status == 403


def test_identity_comes_only_from_the_forwarded_headers_nginx_sets():
    headers = {"x-forwarded-user": "bob", "x-forwarded-subject": "s", "x-forwarded-issuer": "i",
               "x-forwarded-permissions": "overwrite-artifacts, other"}  # fmt: skip
    assert Identity.from_headers(headers) == Identity("bob", "s", "i", frozenset({"overwrite-artifacts", "other"}))
    assert Identity.from_headers({"x-forwarded-subject": "s"}) is None
