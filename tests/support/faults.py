"""Real faults for the reliability tests: frozen and stopped processes, a slow loopback TCP proxy, a tracking server
whose clock is behind or that refuses users, an unwritable cache folder, and a run that logs one metric at a time."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from joserfc.jws import extract_compact

from .waiting import wait_until

HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------------ processes


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """SIGSTOP a process group (a hung provider: the kernel still accepts connections, nobody answers)."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def stop_component(stack, name: str) -> None:
    """Stop one component of the local stack by its recorded PID (its port stays free until `restart`)."""
    entry = stack.local.running()[name]
    os.killpg(entry["pid"], signal.SIGTERM)
    wait_until(lambda: name not in stack.local.running(), 15, f"{name} to stop")


def process_cpu_seconds() -> float:
    """CPU time used by every thread of this process so far."""
    return time.process_time()


# ------------------------------------------------------------------------------------------ files


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Nothing can be created in or renamed into `directory` (as with a full disk or a quota), even for root."""
    if os.geteuid() == 0:
        # Root ignores permission bits; the immutable attribute stops it too.
        subprocess.run(["chattr", "+i", str(directory)], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        mode = stat.S_IMODE(directory.stat().st_mode)
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(mode)


# ------------------------------------------------------------------------------------------ a slow TCP proxy


class SlowProxy:
    """A loopback TCP proxy that holds each answer from upstream for `delay` seconds (a slow provider).

    Bytes pass unchanged both ways; only the first chunk of each answer waits, so one HTTP answer is delayed once.
    """

    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.answers = 0
        #: Requests sent upstream whose answer has not come back yet.
        self.pending = 0
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="slow-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def drop(self) -> None:
        """Cut every open connection, as a network failure would: an answer on its way is lost."""
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        with client, socket.create_connection((HOST, self.upstream_port)) as upstream:
            self._open.update((client, upstream))
            selector = selectors.DefaultSelector()
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            asked = False
            try:
                while not self._closed.is_set():
                    for key, _ in selector.select(timeout=0.5):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        if source is upstream and asked:
                            asked = False
                            time.sleep(self.delay)
                            self.pending -= 1
                            self.answers += 1
                        elif source is client and not asked:
                            asked = True
                            self.pending += 1
                        key.data.sendall(data)
            except OSError:
                return  # dropped
            finally:
                self.pending -= 1 if asked else 0
                self._open.difference_update((client, upstream))


# ------------------------------------------------------------------------------------------ a refusing server


@dataclass
class RefusingServer:
    """A tracking server front (in front of the stack's nginx) that refuses what a third-party server would.

    `clock_behind`: its clock runs this many seconds behind, and it refuses a token whose `iat` is in its future
    with 401 {"detail": "Authentication required"} (mlflow-oidc-auth has no leeway). `unknown_users`: usernames it
    answers the same 401 for. `denied_paths`: path fragments answered 403 {"message": "Permission denied"} without
    an `error_code`. Everything else is forwarded to `upstream` unchanged.
    """

    upstream: str
    clock_behind: float = 0.0
    unknown_users: set[str] = field(default_factory=set)
    denied_paths: tuple[str, ...] = ()
    refused: int = 0
    forwarded: int = 0

    def __post_init__(self) -> None:
        server = self
        http = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in two writes: with Nagle's algorithm the body would wait for the client's
            # delayed ACK (40 ms) on every request of a kept-alive connection.
            disable_nagle_algorithm = True

            def log_message(self, *_args: Any) -> None:
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                refusal = server._refusal(self.path, self.headers.get("Authorization", ""))
                if refusal is not None:
                    server.refused += 1
                    status, payload = refusal
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                server.forwarded += 1
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = http.request(
                    self.command, server.upstream + self.path, headers=headers, data=body,
                    allow_redirects=False, timeout=60,
                )  # fmt: skip
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="refusing-server", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _refusal(self, path: str, authorization: str) -> tuple[int, dict[str, str]] | None:
        claims = _unverified_claims(authorization.removeprefix("Bearer ").strip())
        # Its own clock: behind the provider's, with no leeway for a token issued "in the future".
        if claims is None or float(claims.get("iat", 0)) > time.time() - self.clock_behind:
            return 401, {"detail": "Authentication required"}
        if claims.get("preferred_username") in self.unknown_users:
            return 401, {"detail": "Authentication required"}
        if any(fragment in path for fragment in self.denied_paths):
            return 403, {"message": "Permission denied"}
        return None


def _unverified_claims(token: str) -> dict[str, Any] | None:
    # The real stack behind this front verifies the signature; this front only reads the times, as a hint.
    try:
        return json.loads(extract_compact(token.encode()).payload)
    except Exception:
        return None


# ------------------------------------------------------------------------------------------ a training run


@dataclass
class Step:
    number: int
    started: float
    ended: float
    error: str | None = None


class MetricLoop:
    """A run as a user writes it: log one metric, pause `pause` seconds, repeat; every step's outcome recorded."""

    def __init__(self, run_id: str, pause: float = 0.25, key: str = "loss") -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient()
        self.run_id = run_id
        self.pause = pause
        self.key = key
        self.steps: list[Step] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metric-loop", daemon=True)

    def __enter__(self) -> MetricLoop:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            started = time.time()
            error = None
            try:
                self.client.log_metric(self.run_id, self.key, float(number), step=number)
            except Exception as exc:  # every failure is a lost step
                error = f"{type(exc).__name__}: {exc}"[:400]
            self.steps.append(Step(number, started, time.time(), error))
            number += 1
            self._stop.wait(self.pause)

    def ok_steps_after(self, moment: float) -> list[Step]:
        return [s for s in self.steps if s.ended >= moment and s.error is None]

    def wait_for_steps_after(self, moment: float, count: int = 2, timeout: float = 60) -> None:
        wait_until(lambda: len(self.ok_steps_after(moment)) >= count, timeout, f"{count} good steps after the fault")

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.steps if s.error]

    def first_success_after(self, moment: float) -> float:
        """When the first step that ended after `moment` succeeded (the run's recovery)."""
        return min(s.ended for s in self.ok_steps_after(moment))

    def longest_step(self, since: float, until: float) -> float:
        return max((s.ended - s.started for s in self.steps if since <= s.started <= until), default=0.0)

    def logged_on_server(self) -> list[int]:
        return sorted(int(m.step) for m in self.client.get_metric_history(self.run_id, self.key))
