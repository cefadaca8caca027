"""Authorization policy of the gate: roles from claims; MLflow's route table names the handler, rules name roles."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

if __package__:  # imported as stack.gate.policy (tests, tools); the gate itself runs its files flat (script, image)
    from .routes import ROUTES_FILE, RouteTable
else:
    from routes import ROUTES_FILE, RouteTable  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent

_UNSAFE = re.compile(r"[^\x21-\x7e ]|[\"\\]")
_MAX_DECODE_ROUNDS = 5


def safe_text(value: object, limit: int = 200) -> str:
    """Printable ASCII without quotes or backslashes: fit for headers, log lines and JSON strings."""
    return _UNSAFE.sub("?", str(value))[:limit]


@dataclass(frozen=True)
class Rule:
    """Who may call the routes whose MLflow handler the pattern names (matched against the whole handler name)."""

    name: str
    action: str
    handlers: re.Pattern[str]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    reason: str = ""


@dataclass(frozen=True)
class Policy:
    roles_claims: tuple[str, ...]
    username_claims: tuple[str, ...]
    rules: tuple[Rule, ...]
    routes: RouteTable
    unknown_roles: tuple[str, ...]
    unknown_action: str
    unknown_read_roles: tuple[str, ...]
    # Decided inside MLflow (stack/mlflow-identity), which sees what the gate cannot, e.g. whether an artifact exists.
    server_permissions: dict[str, tuple[str, ...]]

    @classmethod
    def load(cls, path: str | Path, static_prefix: str = "") -> Policy:
        path = Path(path)
        doc = yaml.safe_load(path.read_text())
        name = str(doc.get("routes", ROUTES_FILE.name))
        # Next to the policy, else the gate's own copy (a mounted policy in the container names the shipped table).
        routes_file = next((p for p in (path.parent / name, ROUTES_FILE.parent / name) if p.is_file()), None)
        if routes_file is None:
            raise FileNotFoundError(f"route table {name!r} named by {path} not found next to it or in {HERE}")
        return cls.from_dict(doc, RouteTable.load(routes_file, static_prefix))

    @classmethod
    def from_dict(cls, doc: dict[str, Any], routes: RouteTable) -> Policy:
        roles_claims = doc.get("roles_claim", "roles")
        if isinstance(roles_claims, str):
            roles_claims = [roles_claims]
        rules = tuple(
            Rule(
                name=str(r["name"]),
                action=str(r.get("action", "do this")),
                handlers=re.compile("|".join(f"(?:{h})" for h in r["handlers"])),
                roles=tuple(r["roles"]),
            )
            for r in doc.get("rules", [])
        )
        unknown = doc.get("unknown_routes", {})
        return cls(
            roles_claims=tuple(roles_claims),
            username_claims=tuple(doc.get("username_claims", ["preferred_username", "email", "sub"])),
            rules=rules,
            routes=routes,
            unknown_roles=tuple(unknown.get("roles", ["Admin"])),
            unknown_action=str(unknown.get("action", "call a route this policy does not know")),
            unknown_read_roles=tuple(unknown.get("read_roles", unknown.get("roles", ["Admin"]))),
            server_permissions={str(k): tuple(v) for k, v in (doc.get("server_permissions") or {}).items()},
        )

    def roles(self, claims: dict[str, Any]) -> list[str]:
        """Merge the roles found at every configured dotted claim path, in order, without duplicates."""
        found: list[str] = []
        for dotted in self.roles_claims:
            value: Any = claims
            for part in dotted.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            found.extend(str(v) for v in values if isinstance(v, str) and str(v) not in found)
        return found

    def username(self, claims: dict[str, Any]) -> str:
        for name in self.username_claims:
            value = claims.get(name)
            if isinstance(value, str) and value:
                return value
        return "unknown"

    def permissions(self, roles: list[str]) -> list[str]:
        """The server-side permissions (e.g. overwrite-artifacts) any of these roles grants."""
        return [name for name, needed in self.server_permissions.items() if any(r in needed for r in roles)]

    def rule_for(self, handler: str) -> Rule | None:
        return next((r for r in self.rules if r.handlers.fullmatch(handler)), None)

    def decide(self, method: str, uri: str, user: str, roles: list[str]) -> Decision:
        """Allow only if every route of every plausible reading of the path is allowed (the strictest one wins).

        A reading that is none of MLflow's routes, or a route whose handler no rule names, needs the unknown-route
        roles (the read roles for GET, HEAD, OPTIONS): MLflow answers such a path 404 today, and a newer MLflow may
        answer it with anything.
        """
        method = method.upper()
        unknown = self.unknown_read_roles if method in ("GET", "HEAD", "OPTIONS") else self.unknown_roles
        decision = Decision(True, "")
        for path in interpretations(uri):
            routes = self.routes.match(method, path)
            rules = [self.rule_for(route.handler) for route in routes] or [None]
            for rule in rules:
                decision = self._decide_one(rule, user, roles, unknown)
                if not decision.allowed:
                    return decision
        return Decision(True, decision.rule)

    def _decide_one(self, rule: Rule | None, user: str, roles: list[str], unknown: tuple[str, ...]) -> Decision:
        required, action, name = (
            (rule.roles, rule.action, rule.name) if rule else (unknown, self.unknown_action, "unknown-route")
        )
        if any(role in required for role in roles):
            return Decision(True, name)
        has = ", ".join(safe_text(r, 40) for r in roles) or "no roles"
        reason = f"role {' or '.join(required)} required to {action} (user {safe_text(user, 80)} has {has})"
        return Decision(False, name, safe_text(reason, 300))


def interpretations(uri: str) -> list[str]:
    """Readings of a raw request URI an upstream might route: as sent, decoded once, decoded until stable.

    Each is read with dot segments resolved and kept, duplicate and trailing slashes dropped, in lower case:
    nginx forwards the raw URI unchanged, and uvicorn and werkzeug differ in which of these they apply.
    """
    path = uri
    if not path.startswith("/"):
        # absolute-form request targets ("DELETE http://host/api/...")
        path = urlsplit(path).path or "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    readings = [path]
    decoded = path
    for _ in range(_MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
        readings.append(decoded)
    out: list[str] = []
    for reading in readings:
        for resolve_dots in (True, False):
            canonical = _canonical(reading, resolve_dots)
            if canonical not in out:
                out.append(canonical)
    return out


def _canonical(path: str, resolve_dots: bool) -> str:
    path = re.sub(r"/{2,}", "/", "/" + path.replace("\\", "/").lstrip("/"))
    if resolve_dots:
        path = "/" + posixpath.normpath(path).lstrip("/")
    elif len(path) > 1:
        path = path.rstrip("/")
    return path.lower()
