"""Whether an artifact already exists, asked the way MLflow's own upload handlers resolve where they write."""

from __future__ import annotations

import posixpath

# MLflow's server resolves artifact locations with these private helpers; the route table test pins the version.
from mlflow.server.handlers import (
    _get_artifact_repo_mlflow_artifacts,
    _get_artifact_repository_for_uri,
    _get_tracking_store,
    _get_workspace_scoped_repo_path_if_enabled,
    _is_servable_proxied_run_artifact_root,
)
from mlflow.utils.uri import validate_path_is_safe


def _exists(repo: object, path: str) -> bool:
    head = posixpath.dirname(path)
    entries = repo.list_artifacts(head or None)  # type: ignore[attr-defined]
    return any(entry.path.strip("/") == path.strip("/") for entry in entries)


def proxied_artifact_exists(artifact_path: str) -> bool:
    """For PUT /api/2.0/mlflow-artifacts/artifacts/<path> (and multipart uploads to it)."""
    path = _get_workspace_scoped_repo_path_if_enabled(validate_path_is_safe(artifact_path))
    return _exists(_get_artifact_repo_mlflow_artifacts(), str(path))


def run_artifact_exists(run_uuid: str, artifact_path: str) -> bool:
    """For the UI's POST /ajax-api/2.0/mlflow/upload-artifact?run_uuid=..&path=.."""
    path = validate_path_is_safe(artifact_path)
    run = _get_tracking_store().get_run(run_uuid)
    if _is_servable_proxied_run_artifact_root(run.info.artifact_uri):
        root = posixpath.join(run.info.experiment_id, run.info.run_id, "artifacts")
        return _exists(_get_artifact_repo_mlflow_artifacts(), str(_get_workspace_scoped_repo_path_if_enabled(
            posixpath.join(root, path))))  # fmt: skip
    return _exists(_get_artifact_repository_for_uri(run.info.artifact_uri), path)
