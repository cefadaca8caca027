"""Authorization policy of the gate: roles from claims, first-match rules on method and normalized path."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

_UNSAFE = re.compile(r"[^\x21-\x7e ]|[\"\\]")
_MAX_DECODE_ROUNDS = 5


def safe_text(value: object, limit: int = 200) -> str:
    """Printable ASCII without quotes or backslashes: fit for headers, log lines and JSON strings."""
    return _UNSAFE.sub("?", str(value))[:limit]


@dataclass(frozen=True)
class Rule:
    name: str
    action: str
    methods: frozenset[str]  # empty = any method
    path: re.Pattern[str]
    roles: tuple[str, ...]

    def matches(self, method: str, path: str) -> bool:
        return (not self.methods or method in self.methods) and self.path.search(path) is not None


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
    default_roles: tuple[str, ...]
    default_action: str

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Policy:
        roles_claims = doc.get("roles_claim", "roles")
        if isinstance(roles_claims, str):
            roles_claims = [roles_claims]
        rules = tuple(
            Rule(
                name=str(r["name"]),
                action=str(r.get("action", "do this")),
                methods=frozenset(m.upper() for m in r.get("methods", []) if m != "*"),
                # Paths are normalized to lower case, so patterns are too: one spelling, no surprises.
                path=re.compile(str(r.get("path", "")), re.IGNORECASE),
                roles=tuple(r["roles"]),
            )
            for r in doc.get("rules", [])
        )
        default = doc.get("default", {})
        return cls(
            roles_claims=tuple(roles_claims),
            username_claims=tuple(doc.get("username_claims", ["preferred_username", "email", "sub"])),
            rules=rules,
            default_roles=tuple(default.get("roles", ["Admin", "Default"])),
            default_action=str(default.get("action", "use MLflow")),
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

    def decide(self, method: str, uri: str, user: str, roles: list[str]) -> Decision:
        """Allow only if every plausible reading of the path is allowed (the strictest one wins)."""
        method = method.upper()
        for path in interpretations(uri):
            decision = self._decide_one(method, path, user, roles)
            if not decision.allowed:
                return decision
        return Decision(True, decision.rule)

    def _decide_one(self, method: str, path: str, user: str, roles: list[str]) -> Decision:
        rule = next((r for r in self.rules if r.matches(method, path)), None)
        required, action, name = (
            (rule.roles, rule.action, rule.name) if rule else (self.default_roles, self.default_action, "default")
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
