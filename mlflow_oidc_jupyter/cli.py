"""`mlflow-oidc`: sign in from a terminal, show the session, print a token or the environment for scripts."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence

from .errors import ConfigError, LoginFailed, LoginRequired, OIDCError
from .oidc.client import DeviceAuthorization
from .oidc.outage import UNREACHABLE
from .oidc.session import Session
from .settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LOGIN_REQUIRED = 0, 1, 2, 3


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlflow-oidc",
        description="Sign in to an OpenID Connect provider for MLflow. Settings come from the options below, "
        "then MLFLOW_OIDC_* environment variables, then ~/.config/mlflow-oidc/config.toml.",
    )
    parser.add_argument("--issuer", help="OpenID Provider issuer URL (MLFLOW_OIDC_ISSUER)")
    parser.add_argument("--client-id", help="OAuth client id (MLFLOW_OIDC_CLIENT_ID)")
    parser.add_argument("--scopes", help="space-separated scopes (MLFLOW_OIDC_SCOPES)")
    parser.add_argument("--tracking-uri", help="MLflow tracking server URL (MLFLOW_TRACKING_URI)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="sign in (device flow by default) and cache the tokens")
    how = login.add_mutually_exclusive_group()
    how.add_argument("--device", dest="flow", action="store_const", const="device", help="device code (default)")
    how.add_argument("--browser", dest="flow", action="store_const", const="browser", help="browser + loopback")
    how.add_argument(
        "--client-credentials",
        dest="flow",
        action="store_const",
        const="client_credentials",
        help="as the client itself (needs MLFLOW_OIDC_CLIENT_SECRET)",
    )
    login.add_argument("--no-open", action="store_true", help="with --browser: print the URL, do not open it")
    login.add_argument(
        "--redirect-path",
        help="with --browser: loopback path registered at the provider (MLFLOW_OIDC_REDIRECT_PATH, "
        "default /oauth/callback)",
    )
    login.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the browser sign-in")
    commands.add_parser("status", help="who is signed in, roles, when the tokens expire (no secrets)")
    commands.add_parser("token", help="print a valid access token on stdout (for scripts)")
    commands.add_parser("logout", help="revoke the refresh token and delete the cached tokens")
    commands.add_parser("env", help="print export lines that make any mlflow script authenticate")
    return parser


_ERROR_EXITS: tuple[tuple[type[OIDCError], str, int], ...] = (
    (LoginRequired, "", EXIT_LOGIN_REQUIRED),
    (LoginFailed, "sign-in failed: ", EXIT_ERROR),
    (ConfigError, "", EXIT_USAGE),
    (OIDCError, "", EXIT_ERROR),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.load(
            issuer=args.issuer,
            client_id=args.client_id,
            scopes=args.scopes,
            tracking_uri=args.tracking_uri,
            redirect_path=getattr(args, "redirect_path", None),
        )
    except ConfigError as exc:
        _err(f"mlflow-oidc: {exc}")
        return EXIT_USAGE
    session = Session(settings, background_refresh=False)
    try:
        return COMMANDS[args.command](session, args)
    except OIDCError as exc:
        # The first match decides: (error, what to say before its message, exit status).
        _, said, status = next(e for e in _ERROR_EXITS if isinstance(exc, e[0]))
        _err(f"mlflow-oidc: {said}{exc}")
        return status
    except KeyboardInterrupt:
        _err("mlflow-oidc: cancelled")
        return 130
    finally:
        session.close()


def _login(session: Session, args: argparse.Namespace) -> int:
    flow = args.flow or ("client_credentials" if session.settings.client_secret else "device")
    if flow == "device":
        identity = session.login_device(_show_device_code)
    elif flow == "browser":
        identity = session.login_browser(on_url=_show_url, open_browser=not args.no_open, timeout=args.timeout)
    else:
        identity = session.login_client_credentials()
    roles = ", ".join(identity.roles) or "none"
    _err(f"Signed in to {identity.issuer} as {identity.username} (roles: {roles}).")
    return EXIT_OK


def _show_device_code(device: DeviceAuthorization) -> None:
    minutes = max(1, round((device.expires_at - time.time()) / 60))
    if device.verification_uri_complete:
        _err(f"To sign in, open {device.verification_uri_complete}")
        _err(f"and check that it shows the code {device.user_code} (valid for {minutes} min).")
    else:
        _err(
            f"To sign in, open {device.verification_uri} and enter the code {device.user_code} "
            f"(valid for {minutes} min)."
        )


def _show_url(url: str, opened: bool) -> None:
    if opened:
        _err("Opened your browser to sign in. If nothing appeared, open this URL:")
    else:
        _err("To sign in, open this URL in a browser on this machine:")
    _err(url)


def _status(session: Session, args: argparse.Namespace) -> int:
    if not session.load_cached():
        _err(f"Not signed in to {session.settings.issuer} as client {session.settings.client_id}.")
        _err("Run `mlflow-oidc login` to sign in.")
        return EXIT_LOGIN_REQUIRED
    snap = session.snapshot()
    identity = snap.identity
    assert identity is not None
    lines = [
        ("state", _state(session)),
        ("issuer", snap.issuer),
        ("client", snap.client_id),
        ("user", identity.username),
        ("subject", identity.subject),
        ("email", identity.email or "-"),
        ("roles", ", ".join(identity.roles) or "-"),
        ("access token", _expiry(snap.access_expires_at)),
        ("refresh token", _expiry(snap.refresh_expires_at) if snap.refresh_expires_at else "no known expiry"),
        ("tracking uri", session.settings.tracking_uri or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    return EXIT_OK


def _state(session: Session) -> str:
    """Signed in, or what a process using this sign-in reported while it waits for the provider."""
    note = session.waiting_note()
    if note is None:
        return "signed in"
    since = time.strftime("%H:%M:%S", time.localtime(float(note.get("since") or time.time())))
    return f"{UNREACHABLE} (since {since}, reported by process {note.get('pid')})"


def _expiry(at: float | None) -> str:
    if at is None:
        return "-"
    left = at - time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return f"expires {stamp} (in {left:.0f} s)" if left > 0 else f"expired {stamp} (refreshed on next use)"


def _token(session: Session, args: argparse.Namespace) -> int:
    print(session.access_token())
    return EXIT_OK


def _logout(session: Session, args: argparse.Namespace) -> int:
    if not session.load_cached():
        _err("Not signed in; nothing to do.")
        return EXIT_OK
    user = session.identity.username if session.identity else "?"
    end_session_url = session.logout()
    _err(f"Signed out {user}: refresh token revoked, cached tokens deleted.")
    if end_session_url:
        _err(f"To end the browser session at the identity provider too, open:\n{end_session_url}")
    return EXIT_OK


def _env(session: Session, args: argparse.Namespace) -> int:
    s = session.settings
    pairs = [
        ("MLFLOW_TRACKING_URI", s.tracking_uri),
        ("MLFLOW_TRACKING_AUTH", "oidc"),
        ("MLFLOW_OIDC_ISSUER", s.issuer),
        ("MLFLOW_OIDC_CLIENT_ID", s.client_id),
    ]
    if s.scopes != Settings.__dataclass_fields__["scopes"].default:
        pairs.append(("MLFLOW_OIDC_SCOPES", s.scope))
    if s.roles_claim != Settings.__dataclass_fields__["roles_claim"].default:
        pairs.append(("MLFLOW_OIDC_ROLES_CLAIM", ",".join(s.roles_claim)))
    for name, value in pairs:
        if value:
            print(f"export {name}={shlex.quote(value)}")
    if not s.tracking_uri:
        _err("mlflow-oidc: no tracking URI configured: also export MLFLOW_TRACKING_URI=<your MLflow server>.")
    return EXIT_OK


COMMANDS = {"login": _login, "status": _status, "token": _token, "logout": _logout, "env": _env}

if __name__ == "__main__":
    sys.exit(main())
