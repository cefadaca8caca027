"""Render the nginx templates: ${UPPERCASE} placeholders only, nginx's lowercase $variables left alone."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

HERE = Path(__file__).resolve().parent
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def render(template_path: str | os.PathLike[str], out_path: str | os.PathLike[str], **values: object) -> Path:
    """Write the template with values substituted; raise ValueError naming any placeholder left unreplaced."""
    text = Path(template_path).read_text()
    bad = sorted(k for k in values if not re.fullmatch(r"[A-Z][A-Z0-9_]*", k))
    if bad:
        raise ValueError(f"placeholder names must be UPPERCASE: {bad}")
    rendered = string.Template(text).safe_substitute({k: str(v) for k, v in values.items()})
    missing = sorted(set(_PLACEHOLDER.findall(rendered)))
    if missing:
        raise ValueError(f"{template_path}: no value for placeholder(s) {', '.join(missing)}")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered)
    return out


def render_local(
    run_dir: str | os.PathLike[str],
    *,
    listen: str,
    mlflow_upstream: str,
    gate_upstream: str,
    server_name: str = "localhost",
    mlflow_host: str | None = None,
) -> Path:
    """Render both templates for a local nginx under run_dir; return the main config path.

    Start it with: /usr/sbin/nginx -p RUN_DIR/nginx -c RUN_DIR/nginx/nginx.conf -g 'daemon off;'
    """
    nginx_dir = Path(run_dir).resolve() / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    render(
        HERE / "mlflow-proxy.conf.template",
        nginx_dir / "mlflow-proxy.conf",
        LISTEN=listen,
        SERVER_NAME=server_name,
        MLFLOW_UPSTREAM=mlflow_upstream,
        MLFLOW_HOST=mlflow_host or mlflow_upstream,
        GATE_UPSTREAM=gate_upstream,
        ACCESS_LOG=nginx_dir / "access.log",
        GATE_LUA_DIR=HERE,
    )
    return render(HERE / "nginx-local.conf.template", nginx_dir / "nginx.conf", RUN_DIR=nginx_dir.parent)
