"""Run code in a kernel started by a Jupyter server (so it inherits the server's environment), over its websocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class KernelError(RuntimeError):
    """The code raised in the kernel."""


def run_in_kernel(server, code: str, timeout: float = 120.0) -> str:
    """Start a kernel on `server`, run `code`, return its stdout; the kernel is shut down afterwards."""
    http = server.http()
    kernel = http.post(server.url + "api/kernels", json={"name": "python3"}, timeout=30)
    kernel.raise_for_status()
    kernel_id = kernel.json()["id"]
    try:
        # A thread of its own: Playwright's sync API keeps an event loop running in the test's thread.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, asyncio.wait_for(_execute(server, kernel_id, code), timeout)).result()
    finally:
        http.delete(server.url + f"api/kernels/{kernel_id}", timeout=30)


async def _execute(server, kernel_id: str, code: str) -> str:
    ws_url = server.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    request_headers = {"Authorization": f"token {server.token}"}
    connection = await websocket_connect(HTTPRequest(ws_url, headers=request_headers))
    msg_id = uuid.uuid4().hex
    connection.write_message(
        json.dumps(
            {
                "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                           "msg_type": "execute_request", "version": "5.3",
                           "date": datetime.now(timezone.utc).isoformat()},
                "parent_header": {},
                "metadata": {},
                "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
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
            connection.close()
            if error is not None:
                raise KernelError(error + "\nstdout:\n" + "".join(out))
            return "".join(out)
