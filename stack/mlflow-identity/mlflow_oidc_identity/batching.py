"""Artifact bodies moved in 1 MiB pieces: fewer event-loop turns, thread hops and socket writes per GiB."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The size of the pieces. MLflow hands a file download to the server 64 KiB at a time (one socket write, so one
#: wake-up of whatever reads it) and writes an upload to disk through one thread hop per 256 KiB read.
PIECE = 1 << 20

_API = r"/(?:ajax-)?api/2\.0/"
_DOWNLOADS = re.compile(
    r"(?:" + _API + r"mlflow-artifacts/artifacts/.+|/get-artifact|/model-versions/get-artifact)", re.IGNORECASE
)
_UPLOADS = re.compile(_API + r"mlflow-artifacts/artifacts/.+", re.IGNORECASE)


def is_download(method: str, path: str | None) -> bool:
    """For a path as `rules.route_path` reads it."""
    return method.upper() == "GET" and path is not None and _DOWNLOADS.fullmatch(path) is not None


def is_upload(method: str, path: str | None) -> bool:
    """For a path as `rules.route_path` reads it."""
    return method.upper() == "PUT" and path is not None and _UPLOADS.fullmatch(path) is not None


def batched_send(send: Send, piece: int = PIECE) -> Send:
    """`send` with the body of a response that has a Content-Length passed on in pieces of at least `piece` bytes
    (the last may be shorter). A response without one may be a stream whose parts must leave as they come: it
    passes through untouched."""
    pending: list[bytes] = []
    size = 0
    batching = False

    async def wrapped(message: Message) -> None:
        nonlocal size, batching
        if message["type"] == "http.response.start":
            batching = any(k.lower() == b"content-length" for k, _ in message.get("headers", []))
            return await send(message)
        if not batching or message["type"] != "http.response.body":
            return await send(message)
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if body:
            pending.append(body)
            size += len(body)
        if more and size < piece:
            return None
        joined = b"".join(pending)
        pending.clear()
        size = 0
        return await send({**message, "body": joined, "more_body": more})

    return wrapped


def batched_receive(receive: Receive, piece: int = PIECE) -> Receive:
    """`receive` returning a request body in pieces of at least `piece` bytes (the last may be shorter)."""

    async def wrapped() -> Message:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return message
        parts = [message.get("body", b"")]
        size = len(parts[0])
        while size < piece:
            message = await receive()
            if message["type"] != "http.request":
                return message  # a disconnect: what MLflow's handler must see, the partial body is void anyway
            parts.append(message.get("body", b""))
            size += len(parts[-1])
            if not message.get("more_body", False):
                break
        return {**message, "body": b"".join(parts)}

    return wrapped
