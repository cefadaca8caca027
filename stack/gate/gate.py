"""Authorization gate nginx asks about each request: validates the bearer JWT locally and applies the role policy."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import logging
import math
import signal
import sys
import time
from pathlib import Path

import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy import Policy, safe_text  # noqa: E402
from tokens import JwksCache, KeysUnavailable, TokenRejected, TokenValidator  # noqa: E402

log = logging.getLogger("gate")
KEY_RETRY_SECONDS = 1.0
KEY_REFRESH_SECONDS = 900.0
VERDICT_CACHE_SECONDS = 30


def reuse_until(exp: float, now: float, cap: int) -> int:
    """Last whole second (Unix time) nginx may reuse a verdict on a token expiring at exp; 0: do not reuse.

    nginx (stack/nginx/mlflow_gate.lua) reuses a verdict through the whole second X-Accel-Expires names, so the last
    one is the second *before* exp: a verdict never outlives its token, whatever the gate's leeway.
    """
    until = min(math.ceil(exp) - 1, math.floor(now) + cap)
    return until if cap > 0 and until >= now else 0


class CheckHandler(tornado.web.RequestHandler):
    """GET /check: 204 with the verified user and roles, 401 unauthenticated, 403 forbidden."""

    def initialize(self, validator: TokenValidator, policy: Policy, cache_seconds: int = 0) -> None:
        self.validator = validator
        self.policy = policy
        self.cache_seconds = cache_seconds

    def set_default_headers(self) -> None:
        # nginx reads every header of these answers: only the ones it uses.
        for name in ("Server", "Content-Type", "Date"):
            self.clear_header(name)

    async def get(self) -> None:
        method = self.request.headers.get("X-Original-Method", "GET")
        uri = self.request.headers.get("X-Original-URI", "/")
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self._deny(401, "-", method, uri, "missing bearer token")
        try:
            claims = await self.validator.validate(token)
        except TokenRejected as exc:
            return self._deny(401, "-", method, uri, str(exc))
        except KeysUnavailable:
            log.warning("no decision for %s %s: issuer keys unavailable", method, safe_text(uri))
            self.set_status(503)
            self.set_header("X-Auth-Error", "issuer keys unavailable")
            return
        # No spaces either: the user is one field of the access log line.
        user = safe_text(self.policy.username(claims), 100).replace(" ", "?")
        roles = self.policy.roles(claims)
        decision = self.policy.decide(method, uri, user, roles)
        # Allow and deny alike depend only on (method, raw URI, token): nginx may reuse them for that triple.
        until = reuse_until(float(claims["exp"]), time.time(), self.cache_seconds)
        self.set_header("X-Accel-Expires", f"@{until}" if until else "0")
        if not decision.allowed:
            return self._deny(403, user, method, uri, decision.reason, decision.rule)
        self.set_status(204)
        # Debug only: one line per decision the gate made (repeats that nginx answered itself never show up here).
        log.debug(
            "allowed user=%s method=%s path=%s", user, safe_text(method, 20), safe_text(uri.split("?", 1)[0], 300)
        )
        # nginx hands these to MLflow (X-Forwarded-*), whose server side writes them into run tags.
        self.set_header("X-Auth-User", user)
        self.set_header("X-Auth-Roles", ",".join(safe_text(r, 60).replace(",", "?") for r in roles))
        self.set_header("X-Auth-Subject", safe_text(claims.get("sub", ""), 255))
        self.set_header("X-Auth-Issuer", safe_text(claims["iss"], 255))
        self.set_header("X-Auth-Permissions", ",".join(self.policy.permissions(roles)))

    def _deny(self, status: int, user: str, method: str, uri: str, reason: str, rule: str = "") -> None:
        reason = safe_text(reason, 300)
        log.info(
            "denied %d user=%s method=%s path=%s rule=%s reason=%s",
            status,
            user,
            safe_text(method, 20),
            safe_text(uri.split("?", 1)[0], 300),
            rule or "-",
            reason,
        )
        self.set_status(status)
        self.set_header("X-Auth-Error", reason)
        if user != "-":  # a verified user who was refused: the access log names them
            self.set_header("X-Auth-User", user)


class HealthHandler(tornado.web.RequestHandler):
    """GET /healthz: 200 once the issuer's keys are loaded."""

    def initialize(self, keys: JwksCache) -> None:
        self.keys = keys

    def get(self) -> None:
        self.set_status(200 if self.keys.loaded else 503)
        self.finish({"keys_loaded": self.keys.loaded, "kids": sorted(str(k) for k in self.keys.kids)})


def _quiet_access_log(handler: tornado.web.RequestHandler) -> None:
    # Every proxied request hits /check; denials are logged by the handler, so only log failures here.
    if handler.get_status() >= 500:
        log.warning("%d %s %.1fms", handler.get_status(), handler.request.path, 1000 * handler.request.request_time())


def make_app(validator: TokenValidator, policy: Policy, cache_seconds: int = 0) -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/check", CheckHandler, {"validator": validator, "policy": policy, "cache_seconds": cache_seconds}),
            (r"/healthz", HealthHandler, {"keys": validator.keys}),
        ],
        log_function=_quiet_access_log,
    )


async def _keep_keys_loaded(keys: JwksCache) -> None:
    while True:
        try:
            await keys.load()
        except KeysUnavailable as exc:
            log.warning("%s; retrying", exc)
            await asyncio.sleep(KEY_RETRY_SECONDS)
            continue
        # Periodic reload drops keys the issuer withdrew, even if no unknown kid ever shows up.
        await asyncio.sleep(KEY_REFRESH_SECONDS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--issuer", required=True, help="expected iss; discovery at <issuer>/.well-known/...")
    p.add_argument("--audience", default="mlflow", help="expected aud (string, or member of the aud list)")
    p.add_argument("--policy", default=str(Path(__file__).with_name("policy.yaml")))
    p.add_argument("--static-prefix", default="", help="MLflow's --static-prefix, if it runs under one")
    p.add_argument("--jwks-uri", help="skip discovery and load keys from this URL")
    p.add_argument("--leeway", type=int, default=30, help="clock skew allowed for exp/nbf/iat (seconds)")
    p.add_argument("--jwks-min-refetch", type=float, default=10.0, help="min seconds between unknown-kid refetches")
    p.add_argument("--ca-file", help="CA bundle for the issuer's discovery and JWKS over HTTPS (default: system CAs)")
    p.add_argument(
        "--roles-claim",
        action="append",
        help="dotted claim path of the roles (repeatable), e.g. resource_access.mlflow.roles; replaces the policy's",
    )
    p.add_argument(
        "--verdict-cache-seconds",
        type=int,
        default=VERDICT_CACHE_SECONDS,
        help="how long nginx may reuse an allow/deny for the same method, URI and token (never past the token's exp;"
        " 0: never); policy changes and retired keys apply after at most this long (default %(default)s)",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _warn_if_mlflow_differs(policy: Policy) -> None:
    """Where MLflow is installed beside the gate (the local stack), say when its version is not the table's."""
    try:
        installed = importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return
    if installed != policy.routes.mlflow_version:
        log.warning(
            "the policy's route table is MLflow %s's, installed is MLflow %s: run stack/gate/routes.py --write and "
            "review policy.yaml (routes the table does not know need %s)",
            policy.routes.mlflow_version,
            installed,
            " or ".join(policy.unknown_roles),
        )


async def serve(args: argparse.Namespace) -> None:
    policy = Policy.load(args.policy, args.static_prefix)
    _warn_if_mlflow_differs(policy)
    if args.roles_claim:
        # One roles-claim setting for the gate and the clients: the stack passes the same paths to both.
        policy = dataclasses.replace(policy, roles_claims=tuple(args.roles_claim))
    keys = JwksCache(args.issuer, args.jwks_uri, args.jwks_min_refetch, ca_file=args.ca_file)
    validator = TokenValidator(keys, args.audience, args.leeway)
    app = make_app(validator, policy, args.verdict_cache_seconds)
    server = app.listen(args.port, address=args.host, xheaders=False)
    log.info("gate listening on %s:%d for issuer %s, audience %s", args.host, args.port, args.issuer, args.audience)
    loader = asyncio.create_task(_keep_keys_loaded(keys))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    loader.cancel()
    server.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
