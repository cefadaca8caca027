"""A notebook in real JupyterLab (Chromium): saved on the server, opened with its kernel idle; cells run by keys."""

from __future__ import annotations

import re

from nbformat.v4 import new_code_cell, new_notebook
from playwright.sync_api import TimeoutError as PlaywrightTimeout

KERNELSPEC = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}


def open_notebook(server, page, name: str, sources: list[str]):
    """Save a notebook of `sources` as `name` on `server`, open it in `page`; returns its cells' locator once every
    cell shows and the kernel is idle."""
    notebook = new_notebook(cells=[new_code_cell(source) for source in sources], metadata=KERNELSPEC)
    saved = server.http().put(
        server.url + f"api/contents/{name}", json={"type": "notebook", "content": notebook}, timeout=30
    )
    saved.raise_for_status()
    page.goto(f"{server.url}lab/tree/{name}?token={server.token}")
    cells = page.locator(".jp-Notebook .jp-Cell")
    cells.nth(len(sources) - 1).wait_for(timeout=60_000)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
    accept_kernel_chooser(page)
    return cells


def accept_kernel_chooser(page) -> None:
    """Accept JupyterLab's "Select Kernel" dialog if it shows: it sometimes asks although the notebook names its
    kernel, and on a busy machine it can appear after the notebook already looks idle."""
    chooser = page.locator(".jp-Dialog", has_text="Select Kernel")
    if chooser.is_visible():
        chooser.get_by_role("button", name="Select").click()
        chooser.wait_for(state="hidden", timeout=30_000)


def run_cell(page, cell) -> None:
    """Click into the cell and press Shift+Enter until its prompt shows it ran or runs (JupyterLab may still load)."""
    for _ in range(5):
        accept_kernel_chooser(page)
        try:
            cell.locator(".cm-content").click(timeout=10_000)  # a dialog that shows meanwhile makes this time out
            page.keyboard.press("Shift+Enter")
            cell.locator(".jp-InputPrompt").filter(has_text=re.compile(r"\[[*0-9]+\]")).wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    dialogs = page.locator(".jp-Dialog")
    shown = dialogs.first.inner_text() if dialogs.count() else "none"
    raise AssertionError(f"the cell never started (dialog shown: {shown})")
