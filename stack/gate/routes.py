"""MLflow's own route table for the gate: read from an installed MLflow, kept as JSON, matched against paths.

python stack/gate/routes.py --write   # after an MLflow upgrade: rewrite mlflow-routes.json, review policy.yaml
python stack/gate/routes.py --check   # exit 1 when the installed MLflow's table differs from the file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUTES_FILE = Path(__file__).with_name("mlflow-routes.json")
# Flask's <conv:name> / <name> and Starlette's {name} / {name:conv}: "path" spans slashes, the rest one segment.
_PARAM = re.compile(r"<(?:(?P<fconv>[a-z_]+)(?:\([^)]*\))?:)?(?P<fname>\w+)>|\{(?P<sname>\w+)(?::(?P<sconv>\w+))?\}")


@dataclass(frozen=True)
class Route:
    """One route of MLflow: the methods it answers, its template as MLflow declares it, and its handler's name."""

    methods: frozenset[str]
    template: str
    handler: str
    pattern: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.pattern.fullmatch(path) is not None


def compile_template(template: str, prefix: str = "") -> re.Pattern[str]:
    """A template as a regular expression over normalized paths (lower case, no trailing slash)."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        conv = m.group("fconv") or m.group("sconv") or ""
        out.append(".+" if conv == "path" else "[^/]+")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    body = "".join(out)
    body = body[:-1] if body.endswith("/") and len(body) > 1 else body  # normalized paths have no trailing slash
    return re.compile(re.escape(prefix.rstrip("/")) + body, re.IGNORECASE)


@dataclass(frozen=True)
class RouteTable:
    """The routes of one MLflow version, in MLflow's routing order."""

    mlflow_version: str
    routes: tuple[Route, ...]

    @classmethod
    def from_dict(cls, doc: dict[str, Any], prefix: str = "") -> RouteTable:
        routes = tuple(
            Route(frozenset(r["methods"]), r["path"], r["handler"], compile_template(r["path"], prefix))
            for r in doc["routes"]
        )
        return cls(str(doc["mlflow_version"]), routes)

    @classmethod
    def load(cls, path: str | os.PathLike[str] = ROUTES_FILE, prefix: str = "") -> RouteTable:
        return cls.from_dict(json.loads(Path(path).read_text()), prefix)

    def match(self, method: str, path: str) -> list[Route]:
        """Every route that could serve this method and normalized path (HEAD is served as GET)."""
        method = "GET" if method == "HEAD" else method
        if method == "OPTIONS":  # CORS preflight and Allow: answered for any route of the path, reads nothing
            return [r for r in self.routes if r.pattern.fullmatch(path)]
        return [r for r in self.routes if r.matches(method, path)]


def from_mlflow() -> dict[str, Any]:
    """The route table of the installed MLflow server (its ASGI routes first, then the Flask app it mounts)."""
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    import mlflow
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import create_fastapi_app

    rows: list[dict[str, Any]] = []

    def walk(routes: list[Any], prefix: str = "") -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI >= 0.120 wraps included routers
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "routes") and not hasattr(route, "path"):
                walk(route.routes, prefix)
            elif getattr(route, "methods", None):
                rows.append(_row(route.methods, prefix + route.path, route.endpoint.__name__))

    walk(create_fastapi_app(flask_app).routes)
    for rule in flask_app.url_map.iter_rules():
        view = flask_app.view_functions[rule.endpoint]
        name = rule.endpoint if view.__name__ == "<lambda>" else view.__name__
        rows.append(_row(rule.methods or set(), rule.rule, name))
    return {"mlflow_version": mlflow.__version__, "routes": rows}


def _row(methods: Any, path: str, handler: str) -> dict[str, Any]:
    # HEAD and OPTIONS are added by the frameworks to every GET / every route; the gate handles them itself.
    return {"methods": sorted(set(methods) - {"HEAD", "OPTIONS"}), "path": path, "handler": handler}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help=f"write the installed MLflow's table to {ROUTES_FILE}")
    action.add_argument("--check", action="store_true", help="compare the installed MLflow's table with the file")
    args = parser.parse_args(argv)
    current = from_mlflow()
    if args.write:
        ROUTES_FILE.write_text(json.dumps(current, indent=1) + "\n")
        print(f"wrote {len(current['routes'])} routes of MLflow {current['mlflow_version']} to {ROUTES_FILE}")
        return 0
    saved = json.loads(ROUTES_FILE.read_text())
    if saved == current:
        return 0
    print(f"{ROUTES_FILE} is for MLflow {saved['mlflow_version']}, installed is {current['mlflow_version']}: "
          "run with --write and review stack/gate/policy.yaml", file=sys.stderr)  # fmt: skip
    return 1


if __name__ == "__main__":
    sys.exit(main())
