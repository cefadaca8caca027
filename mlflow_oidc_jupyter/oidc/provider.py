"""OpenID Provider metadata (discovery) and its JWKS, cached per process, refetched once on an unknown key."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry, extract_compact

from ..errors import ProviderError
from ..settings import Settings

logger = logging.getLogger(__name__)

#: Asymmetric algorithms only: never `none`, never HMAC (a public key must not become a shared secret).
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
METADATA_TTL = 3600.0
#: How long a kid still missing after a refetch is not worth another one (bad tokens must not flood the IdP).
MISSING_KID_TTL = 300.0


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of the discovery document we use."""

    issuer: str
    token_endpoint: str
    jwks_uri: str
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    end_session_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    authorization_response_iss_parameter_supported: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_document(cls, doc: dict[str, Any], expected_issuer: str) -> ProviderMetadata:
        # OpenID Connect Discovery 1.0 section 4.3: the issuer must match exactly.
        if doc.get("issuer", "").rstrip("/") != expected_issuer.rstrip("/"):
            raise ProviderError(
                f"The discovery document of {expected_issuer} names issuer {doc.get('issuer')!r}: "
                "check MLFLOW_OIDC_ISSUER (it must be the issuer exactly, e.g. with the realm path)."
            )
        for key in ("token_endpoint", "jwks_uri"):
            if not doc.get(key):
                raise ProviderError(f"The discovery document of {expected_issuer} has no {key}.")
        return cls(
            issuer=doc["issuer"],
            token_endpoint=doc["token_endpoint"],
            jwks_uri=doc["jwks_uri"],
            authorization_endpoint=doc.get("authorization_endpoint"),
            device_authorization_endpoint=doc.get("device_authorization_endpoint"),
            revocation_endpoint=doc.get("revocation_endpoint"),
            end_session_endpoint=doc.get("end_session_endpoint"),
            userinfo_endpoint=doc.get("userinfo_endpoint"),
            id_token_signing_alg_values_supported=tuple(doc.get("id_token_signing_alg_values_supported", ())),
            authorization_response_iss_parameter_supported=bool(
                doc.get("authorization_response_iss_parameter_supported", False)
            ),
            raw=doc,
        )


class Provider:
    """One identity provider: discovery document and signing keys, both cached and thread-safe."""

    def __init__(self, issuer: str, *, verify: bool | str = True, timeout: float = 10.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.verify = verify
        self.timeout = timeout
        self._http = requests.Session()
        self._lock = threading.Lock()
        self._metadata: ProviderMetadata | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0
        self._missing_kids: dict[str, float] = {}
        self.jwks_fetches = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> Provider:
        """The process-wide provider for these settings, so every session shares one JWKS cache."""
        key = (settings.issuer, str(settings.verify), settings.timeout)
        with _PROVIDERS_LOCK:
            provider = _PROVIDERS.get(key)
            if provider is None:
                provider = _PROVIDERS[key] = cls(settings.issuer, verify=settings.verify, timeout=settings.timeout)
            return provider

    def get_json(self, url: str) -> dict[str, Any]:
        """GET a JSON document from the provider, turning failures into ProviderError."""
        try:
            response = self._http.get(url, timeout=self.timeout, verify=self.verify)
        except requests.RequestException as exc:
            raise ProviderError(
                f"The identity provider at {self.issuer} cannot be reached ({type(exc).__name__}). "
                "Check the network and MLFLOW_OIDC_ISSUER.",
                transient=True,
            ) from exc
        if response.status_code != 200:
            raise ProviderError(
                f"The identity provider answered {response.status_code} for {url}.",
                transient=response.status_code >= 500 or response.status_code == 429,
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ProviderError(f"The identity provider sent something other than a JSON object from {url}.")
        return data

    @property
    def metadata(self) -> ProviderMetadata:
        with self._lock:
            if self._metadata is None or time.monotonic() - self._metadata_at > METADATA_TTL:
                doc = self.get_json(f"{self.issuer}/.well-known/openid-configuration")
                self._metadata = ProviderMetadata.from_document(doc, self.issuer)
                self._metadata_at = time.monotonic()
            return self._metadata

    def key_set(self, *, refetch: bool = False) -> KeySet:
        """The provider's public keys; `refetch` asks the provider again."""
        jwks_uri = self.metadata.jwks_uri
        with self._lock:
            if self._keys is None or refetch:
                jwks = self.get_json(jwks_uri)
                try:
                    self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
                except Exception as exc:  # joserfc raises several types for malformed keys
                    raise ProviderError(f"The identity provider's JWKS at {jwks_uri} is invalid: {exc}") from exc
                self._keys_at = time.monotonic()
                self.jwks_fetches += 1
                logger.debug("Fetched JWKS of %s (%d keys)", self.issuer, len(self._keys.keys))
            return self._keys

    def allowed_algorithms(self) -> list[str]:
        offered = self.metadata.id_token_signing_alg_values_supported
        return [alg for alg in ALLOWED_ALGORITHMS if not offered or alg in offered] or list(ALLOWED_ALGORITHMS)

    def decode(self, token: str) -> jwt.Token:
        """Verify a JWS signed by this provider; an unknown `kid` refetches the JWKS once (key rotation)."""
        registry = JWSRegistry(algorithms=self.allowed_algorithms(), strict_check_header=False)
        try:
            return jwt.decode(token, self.key_set(), registry=registry)
        except InvalidKeyIdError:
            kid = str(extract_compact(token.encode()).headers().get("kid"))
            if time.monotonic() - self._missing_kids.get(kid, -MISSING_KID_TTL) < MISSING_KID_TTL:
                raise
            logger.info("Token signed by an unknown key of %s: refetching its JWKS", self.issuer)
            try:
                return jwt.decode(token, self.key_set(refetch=True), registry=registry)
            except InvalidKeyIdError:
                self._missing_kids[kid] = time.monotonic()
                raise


_PROVIDERS: dict[tuple[str, str, float], Provider] = {}
_PROVIDERS_LOCK = threading.Lock()
