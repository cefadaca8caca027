"""What the local stack needs on this machine: programs on the PATH, npm packages installed on first use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import StackError

_HINTS = {"nginx": "apt-get install -y nginx", "node": "install Node.js 20 (apt-get install -y nodejs npm)",
          "npm": "install Node.js 20 (apt-get install -y nodejs npm)"}  # fmt: skip


def require(program: str) -> str:
    """The program's path (also from the sbin folders), or a StackError saying how to install it."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        hint = _HINTS.get(program, "install it")
        raise StackError(f"{program} not found: {hint}, or run the README's setup command")
    return found


def npm_ci(folder: Path, installed: Path) -> None:
    """`npm ci` in `folder` (its package-lock.json pins everything) unless `installed` exists already."""
    if installed.exists():
        return
    result = subprocess.run([require("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"`npm ci` in {folder} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
