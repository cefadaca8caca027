"""Large artifacts stream through the proxy both ways: complete, byte for byte, with flat server memory."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

pytestmark = pytest.mark.slow

MiB = 1 << 20
#: Big enough to cross tornado's 100 MiB client default (a silent truncation there) three times over.
SIZE = int(os.environ.get("MLFLOW_OIDC_TEST_ARTIFACT_MB", "300")) * MiB
BLOCK = os.urandom(MiB)


class PeakRSS:
    """Samples a process's resident memory in the background; `growth` is peak minus the starting value."""

    def __init__(self, server) -> None:
        self.server = server
        self.start = self.peak = server.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.server.rss())

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def body(size: int, digest):
    sent = 0
    while sent < size:
        chunk = BLOCK[: min(MiB, size - sent)]
        digest.update(chunk)
        sent += len(chunk)
        yield chunk


def test_large_artifact_streams_up_and_down_with_flat_server_memory(start_jupyter, stack):
    server = start_jupyter()
    server.sign_in(stack, "alice")
    http = server.http()
    api = server.ui_url + "api/2.0/mlflow"
    run = http.post(f"{api}/runs/create", json={"experiment_id": "0"}, timeout=30).json()["run"]["info"]
    artifact = f"{server.ui_url}api/2.0/mlflow-artifacts/artifacts/0/{run['run_id']}/artifacts/big.bin"
    sent = hashlib.sha256()

    with PeakRSS(server) as upload_memory:
        started = time.monotonic()
        upload = http.put(artifact, data=body(SIZE, sent), timeout=600)
        upload_seconds = time.monotonic() - started
    received, size = hashlib.sha256(), 0
    with PeakRSS(server) as download_memory:
        started = time.monotonic()
        with http.get(f"{server.ui_url}get-artifact", params={"path": "big.bin", "run_uuid": run["run_id"]},
                      stream=True, timeout=600) as download:  # fmt: skip
            for chunk in download.iter_content(MiB):
                received.update(chunk)
                size += len(chunk)
        download_seconds = time.monotonic() - started

    print(f"\n{SIZE // MiB} MiB up {upload_seconds:.1f} s (RSS +{upload_memory.growth / MiB:.0f} MiB), "
          f"down {download_seconds:.1f} s (RSS +{download_memory.growth / MiB:.0f} MiB)")  # fmt: skip
    assert upload.status_code == 200, upload.text
    assert download.status_code == 200
    assert size == SIZE
    assert received.hexdigest() == sent.hexdigest()
    assert upload_memory.growth < 100 * MiB
    assert download_memory.growth < 100 * MiB
