"""Keycloak as the local stack's identity provider: a per-run home over the cached build, the realm to import."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .ports import HOST

KEYCLOAK_DIR = Path(__file__).resolve().parent / "keycloak"
REALM_FILE = KEYCLOAK_DIR / "mlflow-realm.json"
DEMO_USERS_FILE = KEYCLOAK_DIR / "dev" / "mlflow-demo-users.json"
REALM = "mlflow"
ADMIN_USER = "admin"

# The local IdP's lifetime settings, honoured by Keycloak too (realm attributes at import; seconds).
LIFETIME_ENV = {
    "IDP_ACCESS_TOKEN_TTL": "accessTokenLifespan",
    "IDP_REFRESH_TOKEN_TTL": "ssoSessionIdleTimeout",  # Keycloak's refresh token lives as long as the idle timeout
    "IDP_SESSION_TTL": "ssoSessionMaxLifespan",
    "IDP_DEVICE_CODE_TTL": "oauth2DeviceCodeLifespan",
    "IDP_AUTH_CODE_TTL": "accessCodeLifespan",
}


@dataclass(frozen=True)
class KeycloakRun:
    """One Keycloak of one run folder: `home` has its own conf/ and data/, lib/ and themes/ link to the cache."""

    home: Path
    port: int

    @property
    def issuer(self) -> str:
        return f"http://{HOST}:{self.port}/realms/{REALM}"

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self, jdbc_url: str) -> list[str]:
        return [
            str(self.home / "bin" / "kc.sh"), "start", "--optimized", "--import-realm",
            "--http-enabled=true", f"--http-host={HOST}", f"--http-port={self.port}", "--cache=local",
            # The issuer is fixed to the loopback address the clients use, whatever Host a request carries.
            f"--hostname=http://{HOST}:{self.port}", "--hostname-strict=true",
            f"--db-url={jdbc_url}", "--db-username=postgres",
            "--log-console-output=default", "--log-level=info",
        ]  # fmt: skip

    def environment(
        self,
        java_home: Path,
        db_password: str,
        admin_password: str,
        client_secrets: Mapping[str, str],
        heap: str | None = None,
    ) -> dict[str, str]:
        """Secrets go through the environment, never the command line (`ps` shows that to every user)."""
        return {
            "JAVA_HOME": str(java_home),
            "KC_DB_PASSWORD": db_password,
            "KC_BOOTSTRAP_ADMIN_USERNAME": ADMIN_USER,
            "KC_BOOTSTRAP_ADMIN_PASSWORD": admin_password,
            # Placeholders of mlflow-realm.json, resolved by Keycloak at import (as in compose.yaml).
            "JUPYTER_SERVER_NAME": f"{HOST}",
            "CI_BOT_CLIENT_SECRET": client_secrets["ci-bot"],
            "JUPYTERHUB_CLIENT_SECRET": client_secrets["jupyterhub"],
            # A small heap is plenty for a demo realm; the JVM would otherwise size itself to the machine.
            "JAVA_OPTS_KC_HEAP": heap or "-Xms64m -Xmx512m",
        }


def prepare_home(installed: Path, home: Path, env: Mapping[str, str], hub: Mapping | None = None) -> None:
    """Lay out `home` over the cached build and put the realm (plus the demo users) in data/import."""
    if not home.is_dir():
        home.mkdir(parents=True)
        for name in ("bin", "conf"):  # kc.sh finds its home from its own path: a copy, not a link
            shutil.copytree(installed / name, home / name, symlinks=True)
        for name in ("lib", "themes", "providers"):
            (home / name).symlink_to(installed / name)
    imports = home / "data" / "import"
    imports.mkdir(parents=True, exist_ok=True)
    (imports / f"{REALM}-realm.json").write_text(json.dumps(realm_for_import(env, hub)))


def realm_for_import(env: Mapping[str, str], hub: Mapping | None = None) -> dict:
    """The production realm file, plus the development overlay's demo users and any lifetime overrides;
    beside a hub (`hub`: its registration, hubstack.idp_client) set up for a hub with `for_hub`."""
    realm = json.loads(REALM_FILE.read_text())
    if hub is not None:
        realm = for_hub(realm, hub["redirect_uris"], hub["post_logout_redirect_uris"])
    realm["users"] = [*realm.get("users", []), *json.loads(DEMO_USERS_FILE.read_text())["users"]]
    for variable, attribute in LIFETIME_ENV.items():
        if env.get(variable):
            realm[attribute] = int(env[variable])
    if env.get("IDP_REFRESH_TOKEN_TTL") and env.get("IDP_SESSION_TTL") is None:
        # Keycloak caps the idle timeout by the session maximum: keep the maximum at least as long.
        realm["ssoSessionMaxLifespan"] = max(realm["ssoSessionMaxLifespan"], realm["ssoSessionIdleTimeout"])
    return realm


def demo_users() -> dict[str, dict]:
    """alice and bob as endpoints.json lists them: password and the MLflow roles they hold."""
    users = {}
    for user in json.loads(DEMO_USERS_FILE.read_text())["users"]:
        password = next(c["value"] for c in user["credentials"] if c["type"] == "password")
        roles = [r for r in user.get("realmRoles", []) if r in ("Admin", "Default")]
        users[user["username"]] = {"password": password, "roles": roles}
    return users


def for_hub(realm: dict, redirect_uris: list[str], post_logout_redirect_uris: list[str]) -> dict:
    """The realm as a hub deployment registers it (docs/jupyterhub.md, "Provider registration").

    Client `jupyterhub`: exactly the hub's callback and sign-out return address. Client `jupyter`: no browser
    redirect at all, device flow only: on a hub's host anyone can listen on loopback (which Keycloak lets through
    on any port) and serve a path under the hub, so a redirect-based sign-in link could deliver someone's code to
    another person; the device flow makes the person confirm on Keycloak's own page instead.
    """
    for uri in [*redirect_uris, *post_logout_redirect_uris]:
        if "*" in uri:
            raise ValueError(f"no wildcard redirect URIs beside a hub: {uri}")
    realm = json.loads(json.dumps(realm))  # a copy: the caller's realm stays as it was
    clients = {client["clientId"]: client for client in realm["clients"]}
    hub = clients["jupyterhub"]
    hub["redirectUris"] = list(redirect_uris)
    hub["attributes"]["post.logout.redirect.uris"] = "##".join(post_logout_redirect_uris)
    jupyter = clients["jupyter"]
    jupyter["standardFlowEnabled"] = False
    jupyter["redirectUris"] = []
    jupyter["webOrigins"] = []
    jupyter["attributes"].pop("post.logout.redirect.uris", None)
    return realm
