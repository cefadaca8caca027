"""Prototype: the CPU one relay hop spends per GiB of request body, tornado's streaming path vs os.splice().

    .venv/bin/python bench/splice_probe.py [--mib 1024] [--rounds 3] [--modes tornado splice-blocking splice-poll]

Three processes on loopback: a client that PUTs MIB of body with a Content-Length, the relay under test, and a sink
that reads the body (recv_into one reused buffer) and answers 200. The relay is either tornado as the `/mlflow/`
proxy uses it today (@stream_request_body, 1 MiB pieces via chunks.widen_request, a 4-piece queue feeding
chunks.WideHTTPClient's body_producer) or a splice relay (client socket -> pipe of 1 MiB -> upstream socket,
SPLICE_F_MOVE|SPLICE_F_MORE) in a thread, blocking or non-blocking with poll(). The relay process reports its own
CPU (user + system, all threads, getrusage) and wall time per transfer. Measures one hop, not a product path.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MiB = 1 << 20
PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- sink ---------------------------------------------------------------------------------------------------------


def sink(port_out: mp.Queue) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port_out.put(listener.getsockname()[1])
    buffer = bytearray(MiB)
    while True:
        conn, _ = listener.accept()
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        head, rest = head.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        left = length - len(rest)
        while left > 0:
            n = conn.recv_into(buffer, min(left, MiB))
            if not n:
                break
            left -= n
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        conn.close()


# -- relays -------------------------------------------------------------------------------------------------------


def tornado_relay(upstream_port: int, port_out: mp.Queue, stats: mp.Queue) -> None:
    from tornado import web
    from tornado.httpclient import HTTPRequest
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from mlflow_oidc_jupyter.server import chunks

    client = chunks.WideHTTPClient(force_instance=True, max_body_size=1 << 40, max_buffer_size=64 << 20)

    @web.stream_request_body
    class Relay(web.RequestHandler):
        def prepare(self) -> None:
            self.start = (time.perf_counter(), cpu_s())
            self.request.connection.set_max_body_size(1 << 50)
            self.restore = chunks.widen_request(self.request.connection)
            self.body: asyncio.Queue = asyncio.Queue(4)

            async def produce(write):
                while (piece := await self.body.get()) is not None:
                    await write(piece)

            headers = {"Content-Length": self.request.headers["Content-Length"]}
            self.upstream = asyncio.ensure_future(
                client.fetch(
                    HTTPRequest(f"http://127.0.0.1:{upstream_port}/x", method="PUT", headers=headers,
                                body_producer=produce, request_timeout=600),
                    raise_error=False,
                )
            )  # fmt: skip

        def data_received(self, chunk: bytes):
            return self.body.put(chunk)

        async def put(self) -> None:
            await self.body.put(None)
            response = await self.upstream
            self.restore()
            stats.put((time.perf_counter() - self.start[0], cpu_s() - self.start[1], response.code))
            self.finish(response.body)

    async def main() -> None:
        [sock] = bind_sockets(0, "127.0.0.1")
        HTTPServer(web.Application([("/x", Relay)]), max_body_size=1 << 50).add_sockets([sock])
        port_out.put(sock.getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def splice_relay(upstream_port: int, port_out: mp.Queue, stats: mp.Queue, mode: str) -> None:
    from mlflow_oidc_jupyter.server import splice  # before the first transfer: importing costs seconds of CPU

    listener = socket.create_server(("127.0.0.1", 0))
    port_out.put(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        start = (time.perf_counter(), cpu_s())
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        head, rest = head.split(b"\r\n\r\n", 1)
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        if mode == "splice-product":
            head = splice.connect(f"http://127.0.0.1:{upstream_port}", 10)
            head.putrequest("PUT", "/x", skip_host=True, skip_accept_encoding=True)
            for name, value in (("Host", "x"), ("Content-Length", str(length)), ("Connection", "close")):
                head.putheader(name, value)
            upload = splice.Upload(conn, head, rest, length, expect_continue=False, timeout=600)
            outcome: list = []
            thread = threading.Thread(target=_collect, args=(upload.run, outcome))
            thread.start()
            thread.join()
            assert outcome == [splice.Outcome.SENT], outcome
            up = upload.upstream
            up.setblocking(True)
            conn.setblocking(True)
        else:
            up = socket.create_connection(("127.0.0.1", upstream_port))
            up.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % length + rest)
            done: list = []
            thread = threading.Thread(
                target=(_splice_poll if mode == "splice-poll" else _splice_blocking),
                args=(conn, up, length - len(rest), done),
            )
            thread.start()
            thread.join()
            up.setblocking(True)
            conn.setblocking(True)
        answer = b""
        while chunk := up.recv(65536):
            answer += chunk
        code = int(answer.split(b" ", 2)[1])
        stats.put((time.perf_counter() - start[0], cpu_s() - start[1], code))
        conn.sendall(answer)
        conn.close()
        up.close()


def _collect(work, into: list) -> None:
    into.append(work())


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _splice_blocking(client: socket.socket, upstream: socket.socket, left: int, done: list) -> None:
    r, w = _pipe()
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_MORE
    cfd, ufd = client.fileno(), upstream.fileno()
    while left:
        n = os.splice(cfd, w, min(left, PIPE_SIZE), flags=flags)
        if not n:
            raise EOFError
        left -= n
        while n:
            n -= os.splice(r, ufd, n, flags=flags)
    os.close(r)
    os.close(w)
    done.append(True)


def _splice_poll(client: socket.socket, upstream: socket.socket, left: int, done: list) -> None:
    r, w = _pipe()
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_MORE | os.SPLICE_F_NONBLOCK
    client.setblocking(False)
    upstream.setblocking(False)
    cfd, ufd = client.fileno(), upstream.fileno()
    poller = select.poll()
    in_pipe = 0
    while left or in_pipe:
        progressed = False
        if left and in_pipe < PIPE_SIZE:
            try:
                n = os.splice(cfd, w, min(left, PIPE_SIZE - in_pipe), flags=flags)
                if not n:
                    raise EOFError
                left -= n
                in_pipe += n
                progressed = True
            except BlockingIOError:
                pass
        if in_pipe:
            try:
                m = os.splice(r, ufd, in_pipe, flags=flags)
                in_pipe -= m
                progressed = True
            except BlockingIOError:
                pass
        if not progressed:
            poller = select.poll()
            if left and in_pipe < PIPE_SIZE:
                poller.register(cfd, select.POLLIN)
            if in_pipe:
                poller.register(ufd, select.POLLOUT)
            poller.poll(30_000)
    os.close(r)
    os.close(w)
    done.append(True)


# -- client -------------------------------------------------------------------------------------------------------


def put(port: int, mib: int) -> int:
    block = memoryview(bytes(range(256)) * (MiB // 256))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (mib * MiB))
        for _ in range(mib):
            conn.sendall(block)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["tornado", "splice-blocking", "splice-poll", "splice-product"])
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    ports: mp.Queue = ctx.Queue()
    stats: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=sink, args=(ports,), daemon=True)]
    procs[0].start()
    upstream_port = ports.get(timeout=30)
    relays = {}
    for mode in args.modes:
        if mode == "tornado":
            proc = ctx.Process(target=tornado_relay, args=(upstream_port, ports, stats), daemon=True)
        else:
            proc = ctx.Process(target=splice_relay, args=(upstream_port, ports, stats, mode), daemon=True)
        proc.start()
        procs.append(proc)
        relays[mode] = ports.get(timeout=60)
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in args.modes}
    try:
        for _ in range(args.rounds):
            for mode in args.modes:
                code = put(relays[mode], args.mib)
                wall, cpu, upstream_code = stats.get(timeout=600)
                assert code == upstream_code == 200, (code, upstream_code)
                results[mode].append((wall, cpu))
        gib = args.mib / 1024
        print(f"relay hop, {args.mib} MiB PUT, {args.rounds} rounds (median; all rounds)")
        print(f"{'mode':18} {'CPU s/GiB':>10} {'MiB/s':>8}   CPU s/GiB per round")
        for mode, rows in results.items():
            cpu = [c / gib for _, c in rows]
            rate = [args.mib / w for w, _ in rows]
            print(f"{mode:18} {statistics.median(cpu):10.3f} {statistics.median(rate):8.0f}   "
                  + " ".join(f"{c:.3f}" for c in cpu))  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
