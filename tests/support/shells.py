"""A real IPython shell with the extension loaded (as `%load_ext mlflow_oidc_jupyter` does), unloaded afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import mlflow
from IPython.core.interactiveshell import InteractiveShell


@contextlib.contextmanager
def extension_shell(terminal: object | None = None) -> Iterator[InteractiveShell]:
    """The process's IPython shell with the extension loaded; `terminal` (a stdout that answers prompts) rides along
    as `shell.terminal`. Afterwards the extension is unloaded (its threads stopped) and MLflow's tracking URI reset."""
    ip = InteractiveShell.instance()
    if terminal is not None:
        ip.terminal = terminal
    ip.run_line_magic("load_ext", "mlflow_oidc_jupyter")
    try:
        yield ip
    finally:
        ip.run_line_magic("unload_ext", "mlflow_oidc_jupyter")
        mlflow.set_tracking_uri(None)
