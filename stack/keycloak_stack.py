"""The Keycloak flavour of the local stack: PostgreSQL, then Keycloak with realm mlflow, in front of the same gate."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import keycloak_dist, keycloak_idp, postgres
from .ports import HOST

COMPONENTS = ("postgres", "idp", "mlflow", "gate", "nginx")
# A first start creates Keycloak's schema (a minute on a quiet 2-core machine, several under load).
START_TIMEOUT = {"postgres": 60.0, "idp": 900.0}
SECRET_NAMES = ("ci-bot", "jupyterhub", "postgres", "keycloak-admin")


def new_secrets(current: Mapping[str, str]) -> dict[str, str]:
    """The run folder's secrets with any missing one generated (URL-safe: they go into SQL and env verbatim)."""
    return {name: current.get(name) or secrets.token_urlsafe(32) for name in SECRET_NAMES} | dict(current)


@dataclass(frozen=True)
class KeycloakFlavour:
    """What the Keycloak stack adds to one run folder: where PostgreSQL and Keycloak live, how they start."""

    run_dir: Path
    ports: Mapping[str, int]
    secrets: Mapping[str, str]

    @property
    def postgres(self) -> postgres.Postgres:
        return postgres.Postgres(postgres.find_bin_dir(), self.run_dir / "postgres", self.ports["postgres"])

    @property
    def keycloak(self) -> keycloak_idp.KeycloakRun:
        return keycloak_idp.KeycloakRun(self.run_dir / "keycloak", self.ports["idp"])

    @property
    def issuer(self) -> str:
        return self.keycloak.issuer

    def prepare(self, env: Mapping[str, str], say: Callable[[str], None], hub: Mapping | None = None) -> None:
        """Install Keycloak (cached), lay out its home and the database cluster in the run folder.

        `hub`: the JupyterHub's registration (hubstack.idp_client) when the stack runs one.
        """
        installed = keycloak_dist.install(say=say)
        keycloak_dist.find_java_home()  # fail before anything starts when Java went missing since the install
        postgres.prepare(self.run_dir / "postgres", self.ports["postgres"])
        keycloak_idp.prepare_home(installed, self.run_dir / "keycloak", env, hub=hub)

    def command(self, name: str, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        if name == "postgres":
            return self.postgres.command(), dict(env)
        kc = self.keycloak
        extra = kc.environment(
            keycloak_dist.find_java_home(),
            db_password=self.secrets["postgres"],
            admin_password=self.secrets["keycloak-admin"],
            client_secrets=self.secrets,
            heap=env.get("JAVA_OPTS_KC_HEAP"),
        )
        return kc.command(self.postgres.jdbc_url()), {**env, **extra}

    def mlflow_backend_store(self) -> str:
        return self.postgres.mlflow_uri()

    def database_ready(self, running: Callable[[], bool], log_path: Path) -> float:
        pg = self.postgres
        seconds = pg.wait_ready(running, log_path, timeout=START_TIMEOUT["postgres"])
        pg.create_databases(self.secrets["postgres"])
        return seconds

    @staticmethod
    def users() -> dict[str, dict]:
        return keycloak_idp.demo_users()

    def endpoints(self) -> dict:
        """What endpoints.json adds for this flavour (the file is 0600, like the ci-bot secret already in it)."""
        return {
            "idp": "keycloak",
            "keycloak": {
                "url": self.keycloak.base_url,
                "realm": keycloak_idp.REALM,
                "admin_user": keycloak_idp.ADMIN_USER,
                "admin_password": self.secrets["keycloak-admin"],
                "version": keycloak_dist.version(),
            },
            "postgres": {"socket_dir": str(self.postgres.socket_dir), "port": self.ports["postgres"], "host": HOST},
        }
