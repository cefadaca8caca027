"""Run a notebook's code cells, in order, in a new kernel of a user's server (over its websocket), as Jupyter does."""

from __future__ import annotations

import nbformat

from ..support.kernels import run_cells


def upload(user, path: str, notebook: nbformat.NotebookNode) -> None:
    """Save the notebook in the user's server (contents API), where they would open it."""
    answer = user.http().put(
        user.url + f"api/contents/{path}", json={"type": "notebook", "content": notebook}, timeout=30
    )
    answer.raise_for_status()


def run_notebook(user, path: str, timeout: float = 600.0) -> list[str]:
    """Start a kernel, run the saved notebook's code cells in order; returns each cell's printed output."""
    saved = user.http().get(user.url + f"api/contents/{path}", timeout=30)
    saved.raise_for_status()
    cells = [c["source"] for c in saved.json()["content"]["cells"] if c["cell_type"] == "code"]
    return run_cells(user, cells, timeout)
