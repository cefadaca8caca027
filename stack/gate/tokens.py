"""Bearer token validation for the gate: the issuer's JWKS (cached, refetched on unknown kid) and a verdict cache."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidTokenError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from joserfc.jwt import JWTClaimsRegistry
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

log = logging.getLogger("gate.tokens")

#: The package's allow-list (mlflow_oidc_jupyter/oidc/provider.py; a test keeps the two equal): asymmetric only,
#: never `none`, never HMAC (a public key must not become a shared secret). The gate image does not ship the package.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_CLAIM_ERRORS = {
    "iss": "wrong issuer",
    "aud": "wrong audience",
    "exp": "token expired",
    "nbf": "token not yet valid",
    "iat": "token not yet valid",
}


class TokenRejected(Exception):
    """The token is not acceptable; str() is a short, token-free reason fit for X-Auth-Error."""


class KeysUnavailable(Exception):
    """The issuer's keys could not be loaded; no decision is possible (fail closed)."""


class _UnknownKid(Exception):
    pass


@dataclass(frozen=True)
class Verdict:
    claims: dict[str, Any]
    kid: str | None
    exp: float


class JwksCache:
    """The issuer's signing keys, loaded from discovery (or a fixed jwks_uri); refetch is rate-limited."""

    def __init__(
        self,
        issuer: str,
        jwks_uri: str | None = None,
        min_refetch_interval: float = 10.0,
        ca_file: str | None = None,
    ) -> None:
        self.issuer = issuer
        self._jwks_uri = jwks_uri
        self._ca_file = ca_file  # an issuer behind a private CA; None trusts the system's CAs
        self._min_refetch_interval = min_refetch_interval
        self._keys: KeySet | None = None
        self._kids: frozenset[str | None] = frozenset()
        self._last_refetch = float("-inf")
        self._lock = asyncio.Lock()
        self._http = AsyncHTTPClient()
        self.fetches = 0

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    @property
    def kids(self) -> frozenset[str | None]:
        return self._kids

    def key_for(self, header: dict[str, Any]) -> Any:
        if self._keys is None:
            raise KeysUnavailable("issuer keys not loaded")
        kid = header.get("kid")
        candidates = [k for k in self._keys.keys if k.kid == kid] if kid else list(self._keys.keys)
        if not candidates:
            raise _UnknownKid()
        if len(candidates) > 1:
            raise TokenRejected("token has no key id")
        key = candidates[0]
        key_alg = key.alg
        if key_alg and key_alg != header.get("alg"):
            raise TokenRejected("algorithm does not match key")
        return key

    async def load(self) -> None:
        async with self._lock:
            await self._fetch()

    async def refetch_for_unknown_kid(self) -> bool:
        """Refetch once if no such refetch happened recently; True if the keys were reloaded."""
        async with self._lock:
            if time.monotonic() - self._last_refetch < self._min_refetch_interval:
                return False
            self._last_refetch = time.monotonic()
            await self._fetch()
            return True

    async def _fetch(self) -> None:
        jwks_uri = self._jwks_uri
        if jwks_uri is None:
            meta = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if meta.get("issuer") != self.issuer:
                raise KeysUnavailable("discovery document names another issuer")
            jwks_uri = str(meta["jwks_uri"])
        doc = await self._get_json(jwks_uri)
        keys = [k for k in doc.get("keys", []) if k.get("use", "sig") == "sig" and k.get("kty") in ("RSA", "EC")]
        # Private parts, if an IdP ever publishes them, are never needed to verify.
        public = [{n: v for n, v in k.items() if n not in ("d", "p", "q", "dp", "dq", "qi")} for k in keys]
        try:
            self._keys = KeySet.import_key_set({"keys": public})  # type: ignore[typeddict-item]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise KeysUnavailable(f"the issuer's JWKS at {jwks_uri} is invalid: {type(exc).__name__}") from None
        self._kids = frozenset(k.kid for k in self._keys.keys)
        self.fetches += 1
        log.info("loaded %d signing key(s) from %s", len(public), jwks_uri)

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            request = HTTPRequest(url, connect_timeout=5, request_timeout=10, ca_certs=self._ca_file)
            response = await self._http.fetch(request)
            return dict(json.loads(response.body))
        except Exception as exc:
            raise KeysUnavailable(f"cannot fetch {url}: {type(exc).__name__}: {exc}") from None


class TokenValidator:
    """Validate bearer JWTs against the issuer's keys; remember verdicts of good tokens until they expire."""

    def __init__(self, keys: JwksCache, audience: str, leeway: int = 30, cache_size: int = 10_000) -> None:
        self.keys = keys
        self.audience = audience
        self.leeway = leeway
        self._verdicts: OrderedDict[bytes, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._claims = JWTClaimsRegistry(
            leeway=leeway,
            iss={"essential": True, "value": keys.issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
        )

    async def validate(self, token: str) -> dict[str, Any]:
        digest = hashlib.sha256(token.encode()).digest()
        verdict = self._verdicts.get(digest)
        if verdict is not None:
            if time.time() <= verdict.exp + self.leeway and verdict.kid in self.keys.kids:
                self._verdicts.move_to_end(digest)
                return verdict.claims
            del self._verdicts[digest]
        try:
            verdict = self._verify(token)
        except _UnknownKid:
            await self._reload_for_unknown_kid()
            try:
                verdict = self._verify(token)
            except _UnknownKid:
                raise TokenRejected("unknown signing key") from None
        self._verdicts[digest] = verdict
        if len(self._verdicts) > self._cache_size:
            self._verdicts.popitem(last=False)
        return verdict.claims

    async def _reload_for_unknown_kid(self) -> None:
        try:
            await self.keys.refetch_for_unknown_kid()
        except KeysUnavailable:
            if not self.keys.loaded:
                raise

    def _verify(self, token: str) -> Verdict:
        try:
            header = extract_compact(token.encode()).headers()
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("malformed token") from None
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise TokenRejected("algorithm not allowed")
        key = self.keys.key_for(header)
        try:
            claims = jwt.decode(token, key, algorithms=list(ALLOWED_ALGORITHMS)).claims
        except BadSignatureError:
            raise TokenRejected("invalid signature") from None
        except (JoseError, ValueError, TypeError, KeyError):
            raise TokenRejected("malformed token") from None
        for name in ("iss", "aud", "exp"):
            if name not in claims:
                raise TokenRejected(f"missing claim {name}")
        try:
            self._claims.validate(claims)
        except ExpiredTokenError:
            raise TokenRejected("token expired") from None
        except InvalidClaimError as exc:
            raise TokenRejected(_CLAIM_ERRORS.get(str(exc.claim), f"invalid claim {exc.claim}")) from None
        except MissingClaimError:
            raise TokenRejected("missing claim") from None
        except InvalidTokenError:
            raise TokenRejected("token not yet valid") from None
        except (JoseError, ValueError, TypeError):
            raise TokenRejected("invalid token") from None
        if not isinstance(claims.get("exp"), (int, float)):
            raise TokenRejected("invalid claim exp")
        return Verdict(dict(claims), header.get("kid"), float(claims["exp"]))
