"""Run code in a new kernel of a running Jupyter server (it inherits the server's environment), over its websocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .loops import run_coroutine


class KernelError(RuntimeError):
    """Code raised in the kernel; the message has the error and what the code printed before."""


def run_in_kernel(server, code: str, timeout: float = 120.0) -> str:
    """Start a kernel on `server`, run `code`, return its stdout; the kernel is shut down afterwards."""
    return run_cells(server, [code], timeout)[0]


def run_cells(server, cells: list[str], timeout: float = 120.0) -> list[str]:
    """Start a kernel on `server`, run `cells` in order as one notebook session; returns each one's stdout.

    `server` has `url` (ending in `/`), `token` and `http()` (a requests session authenticated to it).
    """
    http = server.http()
    kernel = http.post(server.url + "api/kernels", json={"name": "python3"}, timeout=60)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    try:
        return run_coroutine(asyncio.wait_for(_run_cells(server, kernel_id, cells, timeout), timeout), timeout=None)
    finally:
        http.delete(server.url + f"api/kernels/{kernel_id}", timeout=60)


async def _run_cells(server, kernel_id: str, cells: list[str], timeout: float) -> list[str]:
    ws_url = server.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    # Jupyter answers the handshake once the new kernel is ready, which on a busy machine takes longer than
    # tornado's default 20 s: only the caller's deadline bounds it.
    request = HTTPRequest(ws_url, headers={"Authorization": f"token {server.token}"},
                          connect_timeout=timeout, request_timeout=timeout)  # fmt: skip
    connection = await websocket_connect(request)
    session = uuid.uuid4().hex
    try:
        return [await _execute(connection, session, source) for source in cells]
    finally:
        connection.close()


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
            raise KernelError("kernel websocket closed")
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
                raise KernelError(error + "\nstdout:\n" + "".join(out))
            return "".join(out)
