"""What the tracking server enforces per request: identity tags from the verified user, artifact overwrites by role."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Tags that say who made a run or model: written by the server from the verified identity, never by a client.
IDENTITY_TAGS = ("mlflow.user", "oidc.sub", "oidc.issuer")
#: The permission the gate grants (policy.yaml server_permissions) to replace an artifact that exists.
OVERWRITE = "overwrite-artifacts"

_API = r"/(?:ajax-)?api/2\.0/"
# (method, path pattern, kind), paths as MLflow routes them after any --static-prefix (stack/gate/mlflow-routes.json)
_ROUTES = [
    ("POST", _API + r"mlflow/runs/(?:create|create-promptlab-run)", "create-run"),
    ("POST", _API + r"mlflow/logged-models", "create-model"),
    ("POST", _API + r"mlflow/runs/(?:set-tag|delete-tag)", "tag-key"),
    ("POST", _API + r"mlflow/runs/log-batch", "tags"),
    ("PATCH", _API + r"mlflow/logged-models/[^/]+/tags", "tags"),
    ("DELETE", _API + r"mlflow/logged-models/[^/]+/tags/(?P<key>.+)", "path-key"),
    ("PUT", _API + r"mlflow-artifacts/artifacts/(?P<path>.+)", "artifact"),
    ("POST", _API + r"mlflow-artifacts/mpu/(?:create|complete)/(?P<path>.+)", "artifact"),
    ("POST", r"/ajax-api/2\.0/mlflow/upload-artifact", "run-artifact"),
]
_COMPILED = [(m, re.compile(p, re.IGNORECASE), kind) for m, p, kind in _ROUTES]


class Refused(Exception):
    """The request breaks a rule; answered as MLflow answers errors (JSON error_code + message)."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": self.message}).encode()


@dataclass(frozen=True)
class Identity:
    """The user nginx passed on from the gate's verdict (X-Forwarded-*; nginx replaces whatever a client sent)."""

    user: str
    subject: str
    issuer: str
    permissions: frozenset[str]

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Identity | None:
        user = headers.get("x-forwarded-user", "")
        if not user:
            return None
        permissions = frozenset(p.strip() for p in headers.get("x-forwarded-permissions", "").split(",") if p.strip())
        return cls(user, headers.get("x-forwarded-subject", ""), headers.get("x-forwarded-issuer", ""), permissions)

    def tags(self) -> dict[str, str]:
        values = {"mlflow.user": self.user, "oidc.sub": self.subject, "oidc.issuer": self.issuer}
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class Match:
    kind: str
    params: dict[str, str]


def route_path(path: str, static_prefix: str = "") -> str | None:
    """The path MLflow routes, read as loosely as any router might (slashes; the prefix in any case); None when it
    lies outside the prefix."""
    path = re.sub(r"/{2,}", "/", path)
    prefix = static_prefix.rstrip("/")
    if prefix:
        if not path.lower().startswith(prefix.lower() + "/"):
            return None
        path = path[len(prefix) :]
    return path.rstrip("/") or "/"


def classify(method: str, path: str, static_prefix: str = "") -> Match | None:
    """Which rule applies to this request; paths are read as loosely as any router might (case, slashes)."""
    return classify_routed(method, route_path(path, static_prefix))


def classify_routed(method: str, routed: str | None) -> Match | None:
    """`classify` for a path `route_path` has read already."""
    if routed is None:
        return None
    for route_method, pattern, kind in _COMPILED:
        found = pattern.fullmatch(routed)
        if found and method.upper() == route_method:
            return Match(kind, {k: v for k, v in found.groupdict().items() if v is not None})
    return None


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object MLflow will read (it also accepts a JSON string holding one, from older clients)."""
    try:
        doc: Any = json.loads(body or b"{}")
        if isinstance(doc, str):
            doc = json.loads(doc)
    except (ValueError, UnicodeDecodeError):
        raise Refused(400, "INVALID_PARAMETER_VALUE", "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise Refused(400, "INVALID_PARAMETER_VALUE", "the request body must be a JSON object")
    return doc


def stamp_identity(doc: dict[str, Any], identity: Identity, *, run: bool) -> dict[str, Any]:
    """A create request with the identity tags (and a run's user_id) replaced by the verified identity's."""
    tags = doc.get("tags") or []
    if not isinstance(tags, list):
        raise Refused(400, "INVALID_PARAMETER_VALUE", "tags must be a list")
    kept = [t for t in tags if not (isinstance(t, dict) and t.get("key") in IDENTITY_TAGS)]
    out = {**doc, "tags": kept + [{"key": k, "value": v} for k, v in identity.tags().items()]}
    if run:
        out.pop("userId", None)  # protobuf's JSON name for user_id: one spelling only
        out["user_id"] = identity.user
    return out


def refuse_identity_keys(keys: list[Any]) -> None:
    """Identity tags are the server's: no client may set, change or delete them after the fact."""
    touched = sorted({str(k) for k in keys if k in IDENTITY_TAGS})
    if touched:
        raise Refused(
            403,
            "PERMISSION_DENIED",
            f"tag {', '.join(touched)} is set by the tracking server from the signed-in identity and cannot be changed",
        )


def tag_keys(kind: str, doc: dict[str, Any]) -> list[Any]:
    if kind == "tag-key":
        return [doc.get("key")]
    tags = doc.get("tags") or []
    return [t.get("key") for t in tags if isinstance(t, dict)] if isinstance(tags, list) else []


def overwrite_refused(identity: Identity | None, artifact: str) -> Refused | None:
    """The refusal for replacing an existing artifact without the overwrite permission, if that is the case."""
    if identity is not None and OVERWRITE in identity.permissions:
        return None
    who = identity.user if identity else "an unverified user"
    return Refused(
        403,
        "PERMISSION_DENIED",
        f"artifact {artifact} exists; replacing it needs the {OVERWRITE} permission (role Admin), "
        f"which {who} does not have: log it under a new name",
    )
