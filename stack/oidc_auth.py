"""mlflow-oidc-auth as the stack's server side: its own Python 3.12 virtual environment, its settings, its command."""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

#: What we test against; the venv's folder name carries these, so a new pin gets a new venv beside the old one.
VERSIONS = {"mlflow-oidc-auth": "11.0.2", "mlflow": "3.17.2"}
#: 11.0.2 does not import on 3.11 (a MappingProxyType dataclass default in its permission_kinds.py).
MIN_PYTHON = (3, 12)
PYTHON_ENV = "MLFLOW_OIDC_AUTH_PYTHON"
CACHE_ENV = "MLFLOW_OIDC_STACK_CACHE"
INSTALL_TIMEOUT = 1800.0


class OIDCAuthSetupError(RuntimeError):
    """mlflow-oidc-auth could not be installed; the message says what to do."""


def cache_dir() -> Path:
    """Outside the repository, so a fresh clone (CI) on the same machine reuses the venv."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlflow-oidc-stack"
    return Path(os.environ.get(CACHE_ENV) or default)


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys, venv; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    major, minor = out.stdout.split()
    return int(major), int(minor)


def _candidates() -> list[str]:
    found = []
    if os.environ.get(PYTHON_ENV):
        found.append(os.environ[PYTHON_ENV])
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    for minor in (12, 13):
        # pyenv's own interpreters first: a shim on PATH may point at a version that is not installed.
        found.extend(str(p) for p in sorted(pyenv.glob(f"3.{minor}.*/bin/python"), reverse=True))
        found.extend(p for p in (shutil.which(f"python3.{minor}"), f"/usr/bin/python3.{minor}") if p)
    found.append(sys.executable)
    return found


def find_python() -> str:
    """A Python >= 3.12 with venv: $MLFLOW_OIDC_AUTH_PYTHON, pyenv's 3.12/3.13, python3.12/3.13 on PATH."""
    for python in _candidates():
        version = _version_of(python)
        if version and version >= MIN_PYTHON:
            return python
    raise OIDCAuthSetupError(
        f"mlflow-oidc-auth {VERSIONS['mlflow-oidc-auth']} needs Python >= 3.12 and none was found. Install one "
        f"(`pyenv install 3.12`, or your distribution's python3.12 with venv) or point {PYTHON_ENV} at it."
    )


def venv_dir(python: str | None = None) -> Path:
    major, minor = _version_of(python or find_python()) or MIN_PYTHON
    return cache_dir() / (
        f"mlflow-oidc-auth-{VERSIONS['mlflow-oidc-auth']}-mlflow-{VERSIONS['mlflow']}-py{major}.{minor}"
    )


def ensure_venv(say: Callable[[str], None] = lambda _message: None) -> Path:
    """The virtual environment with mlflow-oidc-auth, installed once per version set (others wait on a lock)."""
    python = find_python()
    target = venv_dir(python)
    stamp = target / ".installed"
    wanted = " ".join(f"{name}=={version}" for name, version in sorted(VERSIONS.items()))
    if _read(stamp) == wanted:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel `./run test` or `stack/run up` waits for this install
        if _read(stamp) == wanted:
            return target
        say(f"installing {wanted} into {target} (first time takes a few minutes)")
        shutil.rmtree(target, ignore_errors=True)
        _run([python, "-m", "venv", str(target)])
        pip = [str(target / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        _run([*pip, *wanted.split()])
        # The module that fails on Python 3.11: proves this interpreter can run the plugin at all.
        _run([str(target / "bin" / "python"), "-c", "import mlflow_oidc_auth.permission_kinds"])
        stamp.write_text(wanted)
    return target


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if result.returncode != 0:
        raise OIDCAuthSetupError(
            f"`{' '.join(argv[:4])} ...` failed (exit {result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )


#: The identity providers the stack configures it for: our small local one, and Keycloak (realm `mlflow`, also an
#: existing one given with `--issuer`). docs/servers.md's table lists exactly `provider_settings` for each; a test
#: (tests/oidc_auth/test_servers_doc.py) keeps the two equal.
PROVIDERS = ("local", "keycloak")
#: Its own browser login reads the roles from the ID token: the local provider puts them there for its `roles`
#: scope; Keycloak adds the client's default scopes unasked, and its realm's mapper decides (docs/servers.md).
_SCOPE = {"local": "openid profile email roles", "keycloak": "openid profile email"}


def provider_settings(provider: str, issuer: str, audience: str, client_id: str) -> dict[str, str]:
    """What depends on the identity provider: where it is, which claims name the user and carry the roles.

    Both providers put a flat `roles` claim (Admin/Default) and `preferred_username` in the access token: the local
    one natively, Keycloak through realm `mlflow`'s "realm roles as roles" mapper. Scripts and our Jupyter proxy send
    bearer tokens, so users are provisioned from the token's claims on first use, never only at a browser login.
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    return {
        "OIDC_DISCOVERY_URL": f"{issuer}/.well-known/openid-configuration",
        "OIDC_ISSUER": issuer,
        "OIDC_AUDIENCE": audience,
        "OIDC_USERNAME_FIELD": "preferred_username",
        "OIDC_GROUPS_ATTRIBUTE": "roles",
        "OIDC_GROUP_NAME": "Default",
        "OIDC_ADMIN_GROUP_NAME": "Admin",
        "OIDC_PROVISION_ON_BEARER_AUTH": "true",
        # The IdP, not the user, decides the roles claim of an audience-restricted token: it may make an admin.
        "OIDC_TRUST_BEARER_GROUP_CLAIMS": "true",
        # Its own browser sign-in (/login) as a public client with PKCE; bearer tokens need no client at all.
        "OIDC_CLIENT_ID": client_id,
        "OIDC_PUBLIC_CLIENT": "true",
        "OIDC_SCOPE": _SCOPE[provider],
    }


def settings(
    provider: str,
    issuer: str,
    audience: str,
    client_id: str,
    run_dir: Path,
    *,
    secret_key: str,
    trusted_proxies: str = "127.0.0.1",
) -> dict[str, str]:
    """The environment mlflow-oidc-auth reads in the local stack: the provider's settings, then the deployment's."""
    return {
        **provider_settings(provider, issuer, audience, client_id),
        "OIDC_USERS_DB_URI": f"sqlite:///{run_dir / 'oidc-auth-users.db'}",
        "SECRET_KEY": secret_key,
        # Only these may set X-Forwarded-Prefix (our Jupyter proxy on this host): its links then carry /mlflow/.
        "TRUSTED_PROXIES": trusted_proxies,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def command(venv: Path, host: str, port: int, run_dir: Path, workers: int = 1) -> list[str]:
    """`mlflow server --app-name oidc-auth` from the venv, with its own tracking store and artifact folder."""
    (run_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    return [
        str(venv / "bin" / "mlflow"), "server", "--app-name", "oidc-auth",
        "--host", host, "--port", str(port),
        "--backend-store-uri", f"sqlite:///{run_dir / 'mlflow.db'}",
        "--artifacts-destination", str(run_dir / "artifacts"),
        "--serve-artifacts",
        "--workers", str(workers),
    ]  # fmt: skip


def installed_versions(venv: Path) -> dict[str, str]:
    """What the venv really holds (pip's view), for reports and test failure messages."""
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                         capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    pins = dict(line.split("==", 1) for line in out.splitlines() if "==" in line)
    return {name: pins.get(name, "?") for name in VERSIONS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stack/oidc_auth.py", description=__doc__)
    parser.add_argument("command", choices=("install", "where"), help="install the venv / print its folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            venv = ensure_venv(lambda message: print(f"==> {message}", file=sys.stderr, flush=True))
        else:
            venv = venv_dir()
    except OIDCAuthSetupError as exc:
        print(f"stack/oidc_auth.py {args.command}: {exc}", file=sys.stderr)
        return 1
    print(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
