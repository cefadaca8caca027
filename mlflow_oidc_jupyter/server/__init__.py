"""Jupyter server extension: the MLflow UI under `{base_url}mlflow/` with the server session's token."""

from __future__ import annotations

from typing import Any

from .app import MLflowOIDC

__all__ = ["MLflowOIDC", "_jupyter_server_extension_points"]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    return [{"module": "mlflow_oidc_jupyter.server", "app": MLflowOIDC}]
