"""One settings object: explicit arguments, then MLFLOW_OIDC_* environment variables, then the config file."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)

DEFAULT_SCOPES = ("openid", "profile", "email")
# Where tokens carry roles, as the gate policy's default: the local IdP and our Keycloak realm's mapper use `roles`.
DEFAULT_ROLES_CLAIM = ("roles",)
DEFAULT_REDIRECT_PATH = "/oauth/callback"

#: Setting name -> environment variable. The tracking URI is MLflow's own variable.
ENV_VARS: dict[str, str] = {
    "issuer": "MLFLOW_OIDC_ISSUER",
    "client_id": "MLFLOW_OIDC_CLIENT_ID",
    "client_secret": "MLFLOW_OIDC_CLIENT_SECRET",
    "scopes": "MLFLOW_OIDC_SCOPES",
    "audience": "MLFLOW_OIDC_AUDIENCE",
    "resource": "MLFLOW_OIDC_RESOURCE",
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "ca_bundle": "MLFLOW_OIDC_CA_BUNDLE",
    "verify": "MLFLOW_OIDC_VERIFY",
    "cache_dir": "MLFLOW_OIDC_CACHE_DIR",
    "leeway": "MLFLOW_OIDC_LEEWAY",
    "refresh_margin": "MLFLOW_OIDC_REFRESH_MARGIN",
    "timeout": "MLFLOW_OIDC_TIMEOUT",
    "patience": "MLFLOW_OIDC_PATIENCE",
    "roles_claim": "MLFLOW_OIDC_ROLES_CLAIM",
    "redirect_path": "MLFLOW_OIDC_REDIRECT_PATH",
}
CONFIG_ENV_VAR = "MLFLOW_OIDC_CONFIG"


def default_config_file(env: Mapping[str, str] | None = None) -> Path:
    """Where the user config file lives unless MLFLOW_OIDC_CONFIG says otherwise."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV_VAR):
        return Path(env[CONFIG_ENV_VAR]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mlflow-oidc" / "config.toml"


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user token cache folder."""
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlflow-oidc"


@dataclass(frozen=True)
class Settings:
    """Everything needed to talk to one identity provider as one client.

    issuer: OpenID Provider issuer URL (discovery at ``{issuer}/.well-known/openid-configuration``).
    client_id / client_secret: the OAuth client; public clients (notebooks, CLI) have no secret.
    scopes: requested scopes; add ``offline_access`` for sessions that outlive the provider's session maximum.
    audience: expected ``aud`` of JWT access tokens (checked when set).
    resource: RFC 8707 resource indicator sent with token requests (when the provider needs one).
    tracking_uri: the MLflow tracking server; bearer tokens are only ever sent to its origin.
    verify: TLS verification: True, False, or the path of a CA bundle.
    cache_dir: folder of the token cache (0700).
    leeway: clock skew tolerated when checking token times, in seconds.
    refresh_margin: a token handed out stays valid at least this long (capped at 25% of its lifetime).
    timeout: HTTP timeout for identity provider calls, in seconds (a token refresh waits longer for its answer:
        the provider may already have spent the refresh token it carries).
    patience: once the access token has expired, how long calls wait for an unreachable identity provider
        before they fail, in seconds; also how long a token refresh waits for the provider's answer.
    roles_claim: dotted claim paths whose roles are merged, e.g. ``realm_access.roles`` or
        ``resource_access.<client>.roles`` (Keycloak); the same list as the gate policy's ``roles_claim``.
    redirect_path: path of the loopback redirect of `mlflow-oidc login --browser` (``http://127.0.0.1:<port><path>``).
    """

    issuer: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    audience: str | None = None
    resource: str | None = None
    tracking_uri: str | None = None
    verify: bool | str = True
    cache_dir: Path = field(default_factory=default_cache_dir)
    leeway: int = 30
    refresh_margin: float = 60.0
    timeout: float = 10.0
    patience: float = 900.0
    roles_claim: tuple[str, ...] = DEFAULT_ROLES_CLAIM
    redirect_path: str = DEFAULT_REDIRECT_PATH

    def __post_init__(self) -> None:
        _check_url("issuer", self.issuer)
        if not self.client_id:
            raise ConfigError(_missing("client_id"))
        if self.tracking_uri and urlsplit(self.tracking_uri).scheme in ("http", "https"):
            _check_url("tracking_uri", self.tracking_uri)
        if self.refresh_margin < 0 or self.leeway < 0 or self.timeout <= 0 or self.patience < 0:
            raise ConfigError("refresh_margin, leeway and patience must be >= 0 and timeout > 0.")

    @property
    def scope(self) -> str:
        """Scopes as the space-separated string OAuth sends."""
        return " ".join(self.scopes)

    @classmethod
    def load(
        cls,
        *,
        env: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        **explicit: Any,
    ) -> Settings:
        """Resolve settings: explicit arguments > environment > config file > defaults."""
        env = os.environ if env is None else env
        path = Path(config_file) if config_file else default_config_file(env)
        raw: dict[str, Any] = {}
        raw.update(_read_config_file(path))
        raw.update({name: env[var] for name, var in ENV_VARS.items() if env.get(var)})
        raw.update({k: v for k, v in explicit.items() if v is not None})
        unknown = set(raw) - set(ENV_VARS)
        if unknown:
            raise ConfigError(f"Unknown setting(s) {sorted(unknown)}; known settings: {sorted(ENV_VARS)}.")
        for name in ("issuer", "client_id"):
            if not raw.get(name):
                raise ConfigError(_missing(name, path))
        return cls(
            issuer=str(raw["issuer"]).rstrip("/"),
            client_id=str(raw["client_id"]),
            client_secret=raw.get("client_secret") or None,
            scopes=_parse_scopes(raw.get("scopes", DEFAULT_SCOPES)),
            audience=raw.get("audience") or None,
            resource=raw.get("resource") or None,
            tracking_uri=raw.get("tracking_uri") or None,
            verify=_parse_verify(raw.get("verify", True), raw.get("ca_bundle")),
            cache_dir=Path(raw["cache_dir"]).expanduser() if raw.get("cache_dir") else default_cache_dir(env),
            leeway=int(_parse_number("leeway", raw.get("leeway", 30))),
            refresh_margin=_parse_number("refresh_margin", raw.get("refresh_margin", 60.0)),
            timeout=_parse_number("timeout", raw.get("timeout", 10.0)),
            patience=_parse_number("patience", raw.get("patience", 900.0)),
            roles_claim=_parse_paths(raw.get("roles_claim", DEFAULT_ROLES_CLAIM)),
            redirect_path="/" + str(raw.get("redirect_path") or DEFAULT_REDIRECT_PATH).lstrip("/"),
        )


def _missing(name: str, path: Path | None = None) -> str:
    where = f" or `{name} = ...` in {path}" if path else ""
    return f"Setting `{name}` is missing: pass {name}=..., set {ENV_VARS[name]}{where}."


def _check_url(name: str, url: str) -> None:
    if not url:
        raise ConfigError(_missing(name))
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"Setting `{name}` must be an http(s) URL, got {url!r} ({ENV_VARS[name]}).")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"Setting `{name}` must use https (plain http is only allowed on loopback), got {url!r}.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}. Fix or remove it.") from exc
    if data.get("client_secret") and path.stat().st_mode & 0o077:
        logger.warning("Config file %s holds a client secret but is readable by others: chmod 600 it.", path)
    return data


def _parse_scopes(value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    scopes = tuple(dict.fromkeys(str(s) for s in items if s))
    if "openid" not in scopes:
        scopes = ("openid", *scopes)
    return scopes


def _parse_paths(value: Any) -> tuple[str, ...]:
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    paths = tuple(dict.fromkeys(str(p).strip() for p in items if str(p).strip()))
    if not paths:
        raise ConfigError("Setting `roles_claim` needs at least one claim path, e.g. roles or realm_access.roles.")
    return paths


def _parse_verify(verify: Any, ca_bundle: Any) -> bool | str:
    if ca_bundle:
        if not Path(str(ca_bundle)).expanduser().is_file():
            raise ConfigError(f"CA bundle {ca_bundle!r} does not exist (MLFLOW_OIDC_CA_BUNDLE / ca_bundle).")
        return str(Path(str(ca_bundle)).expanduser())
    if isinstance(verify, bool):
        return verify
    text = str(verify).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"Setting `verify` must be true or false, got {verify!r}; use ca_bundle for a CA file.")


def _parse_number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Setting `{name}` must be a number, got {value!r} ({ENV_VARS[name]}).") from None
