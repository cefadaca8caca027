"""`mlflow server --app-name oidc-identity`: MLflow's own ASGI app behind a middleware enforcing rules.py."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from mlflow.exceptions import MlflowException

from .batching import batched_receive, batched_send, is_download, is_upload
from .nodelay import set_on_listening_sockets
from .rules import (
    Identity,
    Match,
    Refused,
    classify_routed,
    overwrite_refused,
    parse_json,
    refuse_identity_keys,
    route_path,
    stamp_identity,
    tag_keys,
)

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Bodies read here are JSON of tracking calls (log-batch is MLflow's largest, well below this).
MAX_JSON_BODY = 16 * 1024 * 1024


class IdentityMiddleware:
    """Rewrites identity tags of new runs and models to the verified user; refuses forged tags and overwrites.

    It sits inside MLflow's ASGI app, so it reads the path exactly as MLflow's routers do (scope["path"]).
    Everything it does not name passes through untouched and streamed.
    """

    def __init__(self, app: ASGIApp, static_prefix: str = "") -> None:
        self.app = app
        self.static_prefix = static_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope["path"], self.static_prefix)
        # Artifact bodies in 1 MiB pieces (batching.py): MLflow's upload CPU per GiB 2.43 -> 1.36 s, and whatever
        # relays its downloads (nginx) is woken once per MiB instead of once per 64 KiB.
        if is_download(scope["method"], path):
            send = batched_send(send)
        elif is_upload(scope["method"], path):
            receive = batched_receive(receive)
        match = classify_routed(scope["method"], path)
        if match is None:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        identity = Identity.from_headers(headers)
        try:
            if match.kind in ("artifact", "run-artifact"):
                await self._check_overwrite(match, scope, identity)
                return await self.app(scope, receive, send)
            if match.kind == "path-key":
                refuse_identity_keys([match.params["key"]])
                return await self.app(scope, receive, send)
            doc = parse_json(await _read_body(receive))
            if match.kind in ("create-run", "create-model"):
                if identity is None:
                    raise Refused(
                        403, "PERMISSION_DENIED", "no verified user reached the tracking server: go through the gate"
                    )
                doc = stamp_identity(doc, identity, run=match.kind == "create-run")
            else:
                refuse_identity_keys(tag_keys(match.kind, doc))
        except Refused as refused:
            log.info("refused %s %s for %s: %s", scope["method"], scope["path"], _who(identity), refused.message)
            return await _answer(send, refused)
        body = json.dumps(doc).encode()
        await self.app(_with_length(scope, len(body)), _replay(body, receive), send)

    async def _check_overwrite(self, match: Match, scope: Scope, identity: Identity | None) -> None:
        from . import artifacts  # MLflow's server modules, once the server has configured them

        try:
            if match.kind == "artifact":
                path = match.params["path"]
                exists = await anyio.to_thread.run_sync(artifacts.proxied_artifact_exists, path)
            else:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                path = (query.get("path") or [""])[0]
                run_uuid = (query.get("run_uuid") or [""])[0]
                exists = bool(path and run_uuid) and await anyio.to_thread.run_sync(
                    artifacts.run_artifact_exists, run_uuid, path
                )
        except MlflowException:
            return  # an unsafe path or unknown run: MLflow's handler refuses it with its own message
        refused = overwrite_refused(identity, path) if exists else None
        if refused is not None:
            raise refused


def _who(identity: Identity | None) -> str:
    return identity.user if identity else "-"


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Refused(400, "INVALID_PARAMETER_VALUE", "the client went away mid-request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise Refused(413, "INVALID_PARAMETER_VALUE", f"request body above {MAX_JSON_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _with_length(scope: Scope, length: int) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-length", b"transfer-encoding")]
    return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


async def _answer(send: Send, refused: Refused) -> None:
    body = refused.body()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> ASGIApp:
    """The factory `mlflow server --app-name oidc-identity` runs (uvicorn, MLflow's default server)."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app
    from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

    if os.environ.get("_MLFLOW_SGI_NAME", "uvicorn") != "uvicorn":
        raise RuntimeError("the oidc-identity app runs under uvicorn only: drop --gunicorn-opts / --waitress-opts")
    set_on_listening_sockets()  # each worker runs this factory; its listening socket is already open
    return IdentityMiddleware(create_fastapi_app(flask_app), os.environ.get(STATIC_PREFIX_ENV_VAR, ""))
