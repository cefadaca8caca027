"""The per-request round trip, for comparison with the gate: a decision service like the gate that asks the provider.

    .venv/bin/python bench/introspection_gate.py --port P --issuer URL --client-id ID --client-secret-env VAR

The design of the seed template: no local validation, every request's bearer token goes to the provider's
introspection endpoint (RFC 7662, kept-alive connections), then the same role policy as stack/gate decides.
Benchmark peer only: it caches nothing on purpose, which is what it stands for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stack.gate.policy import Policy  # noqa: E402


class CheckHandler(tornado.web.RequestHandler):
    """GET /check: 204 with the user and roles the provider vouches for, 401 inactive, 403 forbidden."""

    def initialize(self, http: httpx.AsyncClient, endpoint: str, policy: Policy) -> None:
        self.http = http
        self.endpoint = endpoint
        self.policy = policy

    async def get(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.set_status(401)
            return
        answer = await self.http.post(self.endpoint, data={"token": token.strip(), "token_type_hint": "access_token"})
        if answer.status_code != 200:
            self.set_status(503)
            return
        claims = answer.json()
        if not claims.get("active"):
            self.set_status(401)
            return
        user = self.policy.username(claims)
        roles = self.policy.roles(claims)
        method = self.request.headers.get("X-Original-Method", "GET")
        decision = self.policy.decide(method, self.request.headers.get("X-Original-URI", "/"), user, roles)
        self.set_status(204 if decision.allowed else 403)
        if decision.allowed:
            self.set_header("X-Auth-User", user)
            self.set_header("X-Auth-Roles", ",".join(roles))


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


async def serve(args: argparse.Namespace) -> None:
    metadata = httpx.get(f"{args.issuer}/.well-known/openid-configuration", timeout=10).json()
    secret = os.environ[args.client_secret_env]  # from the environment: never on a command line
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(auth=(args.client_id, secret), limits=limits, timeout=10) as http:
        handler_args = {
            "http": http,
            "endpoint": metadata["introspection_endpoint"],
            "policy": Policy.load(args.policy),
        }
        app = tornado.web.Application(
            [(r"/check", CheckHandler, handler_args), (r"/healthz", HealthHandler)], log_function=lambda _handler: None
        )
        server = app.listen(args.port, address="127.0.0.1")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--issuer", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret-env", required=True, help="environment variable holding the client secret")
    p.add_argument("--policy", default=str(Path(__file__).resolve().parent.parent / "stack" / "gate" / "policy.yaml"))
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
