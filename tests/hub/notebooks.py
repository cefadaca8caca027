"""Run a notebook's code cells, in order, in a new kernel of a user's server (over its websocket), as Jupyter does."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import nbformat
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class CellError(RuntimeError):
    """A cell raised; the message has the error and what the cell printed."""


def upload(user, path: str, notebook: nbformat.NotebookNode) -> None:
    """Save the notebook in the user's server (contents API), where they would open it."""
    answer = user.http().put(
        user.url + f"api/contents/{path}", json={"type": "notebook", "content": notebook}, timeout=30
    )
    answer.raise_for_status()


def run_notebook(user, path: str, timeout: float = 600.0) -> list[str]:
    """Start a kernel, run the saved notebook's code cells in order; returns each cell's printed output."""
    http = user.http()
    saved = http.get(user.url + f"api/contents/{path}", timeout=30)
    saved.raise_for_status()
    cells = [c["source"] for c in saved.json()["content"]["cells"] if c["cell_type"] == "code"]
    kernel = http.post(user.url + "api/kernels", json={"name": "python3"}, timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    try:
        # A thread of its own: Playwright's sync API keeps an event loop running in the test's thread.
        with ThreadPoolExecutor(1) as pool:
            run = asyncio.wait_for(_run_cells(user, kernel_id, cells), timeout)
            return pool.submit(asyncio.run, run).result()
    finally:
        http.delete(user.url + f"api/kernels/{kernel_id}", timeout=60)


async def _run_cells(user, kernel_id: str, cells: list[str]) -> list[str]:
    ws_url = user.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    connection = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {user.token}"}))
    session = uuid.uuid4().hex
    outputs = []
    try:
        for source in cells:
            outputs.append(await _execute(connection, session, source))
    finally:
        connection.close()
    return outputs


async def _execute(connection, session: str, code: str) -> str:
    msg_id = uuid.uuid4().hex
    connection.write_message(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                           "version": "5.3", "date": datetime.now(timezone.utc).isoformat()},
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
                "channel": "shell",
                "buffers": [],
            }
        )
    )  # fmt: skip
    out: list[str] = []
    error: str | None = None
    while True:
        raw = await connection.read_message()
        if raw is None:
            raise CellError("kernel websocket closed")
        message = json.loads(raw)
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            if error is not None:
                raise CellError(error + "\nstdout:\n" + "".join(out))
            return "".join(out)
