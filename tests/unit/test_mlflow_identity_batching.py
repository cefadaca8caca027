"""Artifact bodies leave MLflow in 1 MiB pieces, byte for byte, and a stream without a length is never held back."""

from __future__ import annotations

from mlflow_oidc_identity.batching import PIECE, batched_receive, batched_send, is_download, is_upload

from ..support.loops import run_coroutine

KIB64 = 64 * 1024


def _blocks(count: int, size: int = KIB64) -> list[bytes]:
    return [bytes([index % 251]) * size for index in range(count)]


def _sent_through(start_headers: list[tuple[bytes, bytes]], blocks: list[bytes]) -> list[dict]:
    """Every message `batched_send` passes on when MLflow sends `blocks` (as its file responses do, 64 KiB each)."""
    out: list[dict] = []

    async def send(message: dict) -> None:
        out.append(message)

    async def respond() -> None:
        wrapped = batched_send(send)
        await wrapped({"type": "http.response.start", "status": 200, "headers": start_headers})
        for block in blocks:
            await wrapped({"type": "http.response.body", "body": block, "more_body": True})
        await wrapped({"type": "http.response.body", "body": b"", "more_body": False})

    run_coroutine(respond())
    return out


def test_a_file_download_leaves_in_one_mib_pieces_with_every_byte_in_order():
    blocks = _blocks(40)  # 2.5 MiB
    out = _sent_through([(b"content-length", str(40 * KIB64).encode())], blocks)
    bodies = [m for m in out if m["type"] == "http.response.body"]
    assert [len(m["body"]) for m in bodies] == [PIECE, PIECE, PIECE // 2]
    assert [m["more_body"] for m in bodies] == [True, True, False]
    assert b"".join(m["body"] for m in bodies) == b"".join(blocks)


def test_a_response_without_a_length_passes_each_part_as_it_comes():
    """A stream (no Content-Length) must reach the client as it is produced: nothing is gathered."""
    blocks = _blocks(3, 10)
    out = _sent_through([(b"content-type", b"text/event-stream")], blocks)
    assert [m.get("body") for m in out[1:]] == [*blocks, b""]


def _received(messages: list[dict]) -> list[dict]:
    pending = list(messages)

    async def receive() -> dict:
        return pending.pop(0)

    async def read_all() -> list[dict]:
        wrapped = batched_receive(receive)
        got = [await wrapped()]
        while got[-1]["type"] == "http.request" and got[-1].get("more_body"):
            got.append(await wrapped())
        return got

    return run_coroutine(read_all())


def test_an_upload_reaches_mlflow_in_one_mib_pieces_with_every_byte_in_order():
    blocks = _blocks(40, 256 * 1024)  # 10 MiB as uvicorn hands it over, 256 KiB per read
    messages = [{"type": "http.request", "body": b, "more_body": i < len(blocks) - 1} for i, b in enumerate(blocks)]
    got = _received(messages)
    assert [len(m["body"]) for m in got] == [PIECE] * 10
    assert got[-1]["more_body"] is False
    assert b"".join(m["body"] for m in got) == b"".join(blocks)


def test_a_client_that_goes_away_mid_upload_is_seen_as_such():
    got = _received([{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}])
    assert got == [{"type": "http.disconnect"}]


def test_only_artifact_transfers_are_batched():
    assert is_download("GET", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.pkl")
    assert is_download("GET", "/get-artifact")
    assert is_download("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts/x")
    assert not is_download("GET", "/api/2.0/mlflow/experiments/search")
    assert not is_download("PUT", "/api/2.0/mlflow-artifacts/artifacts/x")
    assert is_upload("PUT", "/api/2.0/mlflow-artifacts/artifacts/x")
    assert not is_upload("POST", "/ajax-api/2.0/mlflow/upload-artifact")


def test_the_identity_app_batches_mlflows_artifact_transfers_and_nothing_else():
    """IdentityMiddleware (what `mlflow server --app-name oidc-identity` runs) around a recording stand-in."""
    from mlflow_oidc_identity.app import IdentityMiddleware

    class NoStore(IdentityMiddleware):
        async def _check_overwrite(self, *_: object) -> None:
            """No artifact store here: the overwrite rule has its own tests (test_mlflow_identity_rules.py)."""

    seen: dict[str, list[int]] = {}

    async def mlflow(scope: dict, receive, send) -> None:
        if scope["method"] == "PUT":
            sizes = seen.setdefault("received", [])
            while True:
                message = await receive()
                sizes.append(len(message["body"]))
                if not message["more_body"]:
                    break
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2621440")]})
        for block in _blocks(40):
            await send({"type": "http.response.body", "body": block, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def call(method: str, path: str, static_prefix: str = "") -> list[int]:
        blocks = _blocks(8, 256 * 1024)
        messages = [{"type": "http.request", "body": b, "more_body": i < len(blocks) - 1} for i, b in enumerate(blocks)]
        sent: list[int] = []

        async def receive() -> dict:
            return messages.pop(0)

        async def send(message: dict) -> None:
            if message["type"] == "http.response.body":
                sent.append(len(message["body"]))

        scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
        run_coroutine(NoStore(mlflow, static_prefix)(scope, receive, send))
        return sent

    artifact = "/api/2.0/mlflow-artifacts/artifacts/0/run/artifacts/model.bin"
    assert call("GET", artifact) == [PIECE, PIECE, PIECE // 2]
    unbatched = [KIB64] * 40 + [0]
    assert call("PUT", artifact) == unbatched and seen.pop("received") == [PIECE, PIECE]  # the upload, in pieces
    assert call("GET", "/api/2.0/mlflow/metric-history/get") == unbatched
    # Under --static-prefix, read as the identity rules read it (the prefix in any case, doubled slashes).
    assert call("GET", "/MLflow//api/2.0/mlflow-artifacts/artifacts/x", "/mlflow") == [PIECE, PIECE, PIECE // 2]
    assert call("GET", "/elsewhere/api/2.0/mlflow-artifacts/artifacts/x", "/mlflow") == unbatched
