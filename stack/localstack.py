"""Run the local OIDC-protected MLflow stack (IdP, gate, MLflow, nginx) on 127.0.0.1, from one command.

The IdP is the small local one (`--idp local`, default), a real Keycloak with PostgreSQL (`--idp keycloak`), or an
existing provider that the gate, nginx and MLflow are put in front of (`--issuer URL`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow_oidc_jupyter.files import write_private

from . import hubstack, keycloak_stack, oidc_auth
from .errors import StackError
from .installs import npm_ci, require
from .nginx.render import render_local
from .ports import HOST, free_port, port_free
from .processes import alive, record, spawn, stop_group
from .waiting import unix_http_status, wait_healthy

STACK_DIR = Path(__file__).resolve().parent
DEFAULT_RUN_DIR = STACK_DIR / ".run"
AUDIENCE = "mlflow"

# Start order: the gate needs the IdP's JWKS; nginx needs the gate and MLflow.
COMPONENTS = ("idp", "mlflow", "gate", "nginx")
# The identity providers: our small local one, Keycloak (with PostgreSQL), or an existing one we only point at.
IDPS = ("local", "keycloak", "external")
COMPONENTS_OF = {"local": COMPONENTS, "keycloak": keycloak_stack.COMPONENTS, "external": ("mlflow", "gate", "nginx")}
DEFAULT_PORTS = {"postgres": 5433, "idp": 9000, "mlflow": 5001, "gate": 9100, "nginx": 8080}
PORT_ENV = {name: f"STACK_{name.upper()}_PORT" for name in DEFAULT_PORTS}
START_TIMEOUT = {"idp": 30.0, "mlflow": 90.0, "gate": 30.0, "nginx": 15.0, **hubstack.START_TIMEOUT}
# With --jupyterhub: configurable-http-proxy and the hub, after the rest (stack/hubstack.py).
ALL_COMPONENTS = keycloak_stack.COMPONENTS + hubstack.COMPONENTS + ("mlflow-oidc-auth",)
# Environment that shapes what a component does (token lifetimes, policy): kept in state.json at `up`, so that
# `stack/run restart idp` from another shell starts the IdP with the lifetimes the stack was started with.
REMEMBERED_ENV_PREFIXES = ("IDP_", "STACK_GATE_", "STACK_MLFLOW_", "JAVA_OPTS_KC_")
DEFAULT_PORTS.update(hubstack.DEFAULT_PORTS)
PORT_ENV.update({name: f"STACK_{name.upper().replace('-', '_')}_PORT" for name in hubstack.PORTS})
#: The server sides `up --server` offers: our gate in front of MLflow, or mlflow-oidc-auth validating tokens itself
#: (with any of the IDPS: `_base_components` puts it after the provider's own components).
SERVERS = ("gate", "mlflow-oidc-auth")
DEFAULT_PORTS["mlflow-oidc-auth"] = 5002
PORT_ENV["mlflow-oidc-auth"] = "STACK_MLFLOW_OIDC_AUTH_PORT"
# It imports MLflow's whole server twice (the CLI, then uvicorn): slow on a busy machine.
START_TIMEOUT["mlflow-oidc-auth"] = 240.0

# Demo logins: printed by the demo and written to endpoints.json; never use them outside this local stack.
DEMO_USERS = {
    "alice": {"password": "alice-wonderland", "roles": ["Admin"], "email": "alice@example.org", "name": "Alice Admin"},
    "bob": {"password": "bob-builder", "roles": ["Default"], "email": "bob@example.org", "name": "Bob Default"},
}


@dataclass(frozen=True)
class ExternalProvider:
    """An existing OpenID Provider (an organisation's Keycloak) that the gate, nginx and MLflow are put in front of."""

    issuer: str
    ca_file: str | None = None
    audience: str = AUDIENCE
    client_id: str = "jupyter"


class _RunFile:
    """A file of the run folder, by its name (a read-only attribute of `Layout`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, layout: Layout, owner: type | None = None) -> Path:
        return layout.run_dir / self.name


@dataclass(frozen=True)
class Layout:
    """Where one stack instance keeps its state, config and logs."""

    run_dir: Path

    state = _RunFile("state.json")
    endpoints = _RunFile("endpoints.json")
    idp_config = _RunFile("idp.json")
    secrets = _RunFile("secrets.json")
    mlflow_socket = _RunFile("mlflow.sock")

    def log(self, component: str) -> Path:
        return self.run_dir / "logs" / f"{component}.log"


# ------------------------------------------------------------------------------------------ the stack


class LocalStack:
    """One instance of the local stack, all of whose state lives in its run folder."""

    def __init__(
        self,
        run_dir: Path = DEFAULT_RUN_DIR,
        env: dict[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        server: str | None = None,
    ) -> None:
        self.layout = Layout(Path(run_dir).resolve())
        # None: the server side this run folder last started (for down/status/restart), else the gate.
        self.server = server or self._read_state().get("server", "gate")
        if self.server not in SERVERS:
            raise StackError(f"unknown server side {self.server!r}; choose one of {', '.join(SERVERS)}")
        remembered = self._read_state().get("env", {})
        # e.g. IDP_ACCESS_TOKEN_TTL for every component started; what `up` was given wins over this shell's.
        self._env = {**os.environ, **remembered, **(env or {})}
        # STACK_MLFLOW_TCP=1: MLflow on a loopback port anyone on the host can reach without a token (benchmarks).
        self._mlflow_tcp = self._env.get("STACK_MLFLOW_TCP", "") == "1"
        self._say = log or (lambda message: print(message, file=sys.stderr, flush=True))

    @property
    def idp(self) -> str:
        """Which identity provider this run folder uses (chosen at `up`, remembered in state.json)."""
        return str(self._read_state().get("idp", "local"))

    def _keycloak(self, ports: dict[str, int]) -> keycloak_stack.KeycloakFlavour:
        return keycloak_stack.KeycloakFlavour(self.layout.run_dir, ports, self._secrets())

    # ------------------------------------------------------------------ state

    def _read_state(self) -> dict:
        try:
            return json.loads(self.layout.state.read_text())
        except FileNotFoundError:
            return {"components": {}}

    def _write_state(self, state: dict) -> None:
        write_private(self.layout.state, json.dumps(state, indent=2))

    def running(self) -> dict[str, dict]:
        """Components whose recorded process is still alive."""
        return {n: e for n, e in self._read_state()["components"].items() if alive(e)}

    def endpoints(self) -> dict:
        try:
            return json.loads(self.layout.endpoints.read_text())
        except FileNotFoundError as exc:
            raise StackError(f"no endpoints at {self.layout.endpoints}: start the stack with `stack/run up`") from exc

    # ------------------------------------------------------------------ config

    def _ports(self, free_ports: bool, requested: dict[str, int], jupyterhub: bool = False) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name in self._base_components() + (hubstack.PORTS if jupyterhub else ()):
            if name in requested:
                ports[name] = requested[name]
            elif self._env.get(PORT_ENV[name]):
                ports[name] = int(self._env[PORT_ENV[name]])
            elif free_ports:
                # Below the ephemeral range and noted for 30 min: Keycloak binds its port only at the end of a
                # start of minutes, by which time an ephemeral port may be some outgoing connection's.
                ports[name] = free_port()
            else:
                ports[name] = DEFAULT_PORTS[name]
        for name, port in ports.items():
            if not port_free(port):
                raise StackError(
                    f"port {port} for {name} on {HOST} is taken by another process: stop it, set "
                    f"{PORT_ENV[name]}=<port>, or run `stack/run up --free-ports`"
                )
        return ports

    def _secrets(self) -> dict:
        """Per-instance client secrets and keys, kept across restarts of the same run folder."""
        try:
            values = json.loads(self.layout.secrets.read_text())
        except FileNotFoundError:
            values = {}
        wanted = {
            "ci-bot": secrets.token_urlsafe(32),
            "mlflow-oidc-auth": secrets.token_hex(32),  # signs its session cookie
            **hubstack.new_secrets(),
        }
        if self.idp == "keycloak":
            wanted = keycloak_stack.new_secrets(wanted)
        if not wanted.keys() <= values.keys():
            values = {**wanted, **values}
            write_private(self.layout.secrets, json.dumps(values))
        return values

    def _write_config(
        self, ports: dict[str, int], external: ExternalProvider | None = None, roles_claim: tuple[str, ...] = ()
    ) -> dict:
        keys = self._secrets()
        clients = {
            "jupyter": {"client_id": "jupyter"},
            "ci-bot": {"client_id": "ci-bot", "client_secret": keys["ci-bot"], "roles": ["Default"]},
        }
        jupyterhub = "proxy" in ports
        if jupyterhub:
            clients[hubstack.CLIENT_ID] = hubstack.idp_client(ports, keys["jupyterhub"])
            # Beside a hub no browser redirect for the public client: device flow only (docs/jupyterhub.md).
            clients["jupyter"]["exact_redirect_uris"] = []
        users = {name: {"password": u["password"], "roles": u["roles"]} for name, u in DEMO_USERS.items()}
        extra: dict = {"idp": self.idp}
        if self.idp == "keycloak":
            flavour = self._keycloak(ports)
            flavour.prepare(self._env, self._say, hub=clients.get(hubstack.CLIENT_ID))
            issuer, users, extra = flavour.issuer, flavour.users(), flavour.endpoints()
            clients["jupyterhub"] = {"client_id": "jupyterhub", "client_secret": keys["jupyterhub"]}
        elif external is not None:
            issuer, users, clients = external.issuer, {}, {"jupyter": {"client_id": external.client_id}}
            extra["ca_file"] = external.ca_file
        else:
            issuer = f"http://{HOST}:{ports['idp']}"
            self._write_local_idp_config(issuer, ports, clients)
        if self.server == "mlflow-oidc-auth":
            # No proxy in front: the tracking URI is mlflow-oidc-auth itself, which validates the bearer tokens.
            return {
                "issuer": issuer,
                "audience": external.audience if external else AUDIENCE,
                "server": self.server,
                "mlflow_url": f"http://{HOST}:{ports['mlflow-oidc-auth']}",
                "users": users,
                "clients": {
                    n: {k: v for k, v in c.items() if k in ("client_id", "client_secret")} for n, c in clients.items()
                },
                "ports": ports,
                "run_dir": str(self.layout.run_dir),
                **extra,
            }
        endpoints = self._render_and_describe(ports, issuer, users, clients)
        endpoints.update(extra, audience=external.audience if external else AUDIENCE)
        # The gate policy's claim paths unless replaced: the one roles setting `stack/run env` hands to the clients.
        endpoints["roles_claim"] = list(roles_claim or self._policy_roles_claim())
        if jupyterhub:
            endpoints["jupyterhub_url"] = hubstack.hub_url(ports) + "/"
            hubstack.write_settings(self.layout.run_dir, ports, endpoints, keys["jupyterhub"])
        return endpoints

    def _policy_roles_claim(self) -> tuple[str, ...]:
        from .gate.policy import Policy

        policy = self._env.get("STACK_GATE_POLICY", str(STACK_DIR / "gate" / "policy.yaml"))
        try:
            return Policy.load(policy).roles_claims
        except Exception:  # noqa: BLE001 - the gate reports an unreadable policy itself, with its own message
            return ()

    def _write_local_idp_config(self, issuer: str, ports: dict[str, int], clients: dict) -> None:
        idp_config = {
            "issuer": issuer,
            "port": ports["idp"],
            "keys_file": str(self.layout.run_dir / "idp-keys.json"),
            "audience": AUDIENCE,
            "users": DEMO_USERS,
            "clients": clients,
        }
        write_private(self.layout.idp_config, json.dumps(idp_config, indent=2))

    def _render_and_describe(self, ports: dict[str, int], issuer: str, users: dict, clients: dict) -> dict:
        mlflow_tcp = f"{HOST}:{ports['mlflow']}"
        render_local(
            self.layout.run_dir,
            listen=f"{HOST}:{ports['nginx']}",
            # MLflow listens on a Unix socket in the 0700 run folder: only this user (nginx's workers) can reach it.
            mlflow_upstream=mlflow_tcp if self._mlflow_tcp else f"unix:{self.layout.mlflow_socket}",
            mlflow_host=mlflow_tcp if self._mlflow_tcp else "localhost",
            gate_upstream=f"{HOST}:{ports['gate']}",
            server_name=HOST,
        )

        return {
            "issuer": issuer,
            "audience": AUDIENCE,
            "mlflow_url": f"http://{HOST}:{ports['nginx']}",
            **(
                {"mlflow_upstream": f"http://{HOST}:{ports['mlflow']}"}
                if self._mlflow_tcp
                else {"mlflow_socket": str(self.layout.mlflow_socket)}
            ),
            "gate_url": f"http://{HOST}:{ports['gate']}",
            "users": users,
            "clients": {
                name: {k: v for k, v in c.items() if k in ("client_id", "client_secret")} for name, c in clients.items()
            },
            "ports": ports,
            "run_dir": str(self.layout.run_dir),
        }

    # ------------------------------------------------------------------ components

    def _component_env(self) -> dict[str, str]:
        env = dict(self._env)
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        env.setdefault("DO_NOT_TRACK", "true")
        return env

    def _command(self, name: str, endpoints: dict) -> tuple[list[str], dict[str, str]]:
        ports, issuer = endpoints["ports"], endpoints["issuer"]
        env = self._component_env()
        run = self.layout.run_dir
        if self.idp == "keycloak" and name in ("postgres", "idp"):
            return self._keycloak(ports).command(name, env)
        if name == "idp":
            env["IDP_CONFIG"] = str(self.layout.idp_config)
            return [require("node"), str(STACK_DIR / "idp" / "server.mjs")], env
        if name == "mlflow":
            # uvicorn binds the socket (0666) instead of --host/--port; the run folder (0700) keeps others out.
            listen = [] if self._mlflow_tcp else ["--uvicorn-opts", f"--uds {self.layout.mlflow_socket}"]
            self.layout.mlflow_socket.unlink(missing_ok=True)  # left by a crash, it would make the bind fail
            return self._mlflow_argv(ports, ports["mlflow"], listen, env), env
        if name == "gate":
            return [
                sys.executable, str(STACK_DIR / "gate" / "gate.py"),
                "--host", HOST, "--port", str(ports["gate"]),
                "--issuer", issuer, "--audience", endpoints["audience"],
                "--leeway", env.get("STACK_GATE_LEEWAY", "30"),
                "--policy", env.get("STACK_GATE_POLICY", str(STACK_DIR / "gate" / "policy.yaml")),
                *(f"--roles-claim={path}" for path in endpoints.get("roles_claim", [])),
                *(["--ca-file", endpoints["ca_file"]] if endpoints.get("ca_file") else []),
            ], env  # fmt: skip
        if name == "nginx":
            conf = run / "nginx" / "nginx.conf"
            return [require("nginx"), "-p", str(run / "nginx"), "-c", str(conf), "-g", "daemon off;"], env
        if name in hubstack.COMPONENTS:
            return hubstack.command(name, run, ports, self._secrets(), env)
        if name == "mlflow-oidc-auth":
            folder = run / "mlflow-oidc-auth"
            folder.mkdir(exist_ok=True)
            # An existing provider (`--issuer`) is taken to be a Keycloak realm like ours (docs/servers.md).
            provider = "local" if self.idp == "local" else "keycloak"
            client_id = endpoints["clients"]["jupyter"]["client_id"]
            secret_key = self._secrets()["mlflow-oidc-auth"]
            env.update(
                oidc_auth.settings(provider, issuer, endpoints["audience"], client_id, folder, secret_key=secret_key)
            )
            return oidc_auth.command(self._oidc_auth_venv(), HOST, ports[name], folder), env
        raise StackError(f"unknown component {name!r}; components are {', '.join(self._components())}")

    def _mlflow_argv(self, ports: dict[str, int], port: int, listen: list[str], env: dict[str, str]) -> list[str]:
        """`mlflow server` with the stack's app, store, artifact root and workers, on `port` unless `listen` says
        otherwise (`--uvicorn-opts --uds`)."""
        (self.layout.run_dir / "artifacts").mkdir(exist_ok=True)
        # Server-side jobs (prompt optimization, scorers) start seven worker processes we never use.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        _ensure_identity_app_installed()
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", HOST, "--port", str(port), *listen,
            "--app-name", "oidc-identity",
            "--backend-store-uri", self._backend_store(ports),
            "--artifacts-destination", str(self.layout.run_dir / "artifacts"),
            "--serve-artifacts",
            "--workers", env.get("STACK_MLFLOW_WORKERS", "2"),
        ]  # fmt: skip

    def mlflow_twin_command(self, port: int) -> tuple[list[str], dict[str, str]]:
        """The command and environment of a second MLflow like the running stack's (same app, workers, backend
        store and artifact folder) listening on 127.0.0.1:`port`, reachable by anyone on the host without a token.

        For benchmarks only: "direct" on a port while nginx reaches the stack's own MLflow over its socket, as
        shipped. Start it once the stack is up (the store is then made); whoever starts it stops it."""
        env = self._component_env()
        return self._mlflow_argv(self.endpoints()["ports"], port, [], env), env

    def _backend_store(self, ports: dict[str, int]) -> str:
        """MLflow's metadata: PostgreSQL in the Keycloak stack (as in production), SQLite in the light one."""
        if self.idp == "keycloak":
            return self._keycloak(ports).mlflow_backend_store()
        return f"sqlite:///{self.layout.run_dir / 'mlflow.db'}"

    def _oidc_auth_venv(self) -> Path:
        try:
            return oidc_auth.ensure_venv(self._say)
        except oidc_auth.OIDCAuthSetupError as exc:
            raise StackError(str(exc)) from exc

    def _health_url(self, name: str, endpoints: dict) -> str:
        ports = endpoints["ports"]
        if name in hubstack.COMPONENTS:
            return hubstack.health_url(name, ports)[0]
        if name == "idp":
            return f"{endpoints['issuer']}/.well-known/openid-configuration"
        if name == "mlflow-oidc-auth":  # with `--server mlflow-oidc-auth` only it and the IdP have ports
            return f"http://{HOST}:{ports[name]}/health"
        return {
            "mlflow": f"http://{HOST}:{ports['mlflow']}/health" if self._mlflow_tcp else "/health",
            "gate": f"http://{HOST}:{ports['gate']}/healthz",
            # Through nginx and the gate: 401 without a token proves the whole chain answers.
            "nginx": f"http://{HOST}:{ports['nginx']}/health",
        }[name]

    def _launch(self, name: str, endpoints: dict) -> dict:
        argv, env = self._command(name, endpoints)
        log_path = self.layout.log(name)
        proc = spawn(argv, env, log_path, cwd=self.layout.run_dir)
        entry = {**record(proc.pid), "port": endpoints["ports"][name], "log": str(log_path)}
        if name == "mlflow" and "mlflow_socket" in endpoints:
            entry["socket"] = endpoints["mlflow_socket"]  # what `status` shows: where MLflow listens
        state = self._read_state()
        state["components"][name] = entry
        self._write_state(state)
        return entry

    def _wait_healthy(self, name: str, entry: dict, endpoints: dict) -> float:
        if name == "postgres":
            return self._keycloak(endpoints["ports"]).database_ready(lambda: alive(entry), Path(entry["log"]))
        timeout = START_TIMEOUT[name]
        if self.idp == "keycloak":
            timeout = keycloak_stack.START_TIMEOUT.get(name, timeout)
        url = self._health_url(name, endpoints)
        return wait_healthy(
            name,
            url,
            running=lambda: alive(entry),
            log_path=Path(entry["log"]),
            timeout=timeout,
            expected=hubstack.health_url(name, endpoints["ports"])[1]
            if name in hubstack.COMPONENTS
            else {401}
            if name == "nginx"
            else {200},
            probe=(lambda: unix_http_status(self.layout.mlflow_socket, url)) if url.startswith("/") else None,
        )

    # ------------------------------------------------------------------ commands

    def up(
        self,
        free_ports: bool = False,
        ports: dict[str, int] | None = None,
        jupyterhub: bool = False,
        idp: str = "local",
        external: ExternalProvider | None = None,
        roles_claim: tuple[str, ...] = (),
    ) -> dict:
        """Start every component, wait until all are healthy, write endpoints.json; undo everything on failure.

        `jupyterhub`: also configurable-http-proxy and JupyterHub, signing people in at the IdP.
        `idp`: "local" (the small built-in IdP) or "keycloak"; `external`: no IdP, the gate trusts that provider.
        `roles_claim`: claim paths of the roles, replacing the gate policy's (and handed to clients by `env`).
        """
        if self.running():
            raise StackError(f"the stack in {self.layout.run_dir} is already running: `stack/run down` first")
        idp = "external" if external is not None else idp
        if idp not in IDPS:
            raise StackError(f"unknown IdP {idp!r}; choose one of {', '.join(IDPS)}")
        if jupyterhub and idp == "external":
            raise StackError("--jupyterhub runs with the local IdP or Keycloak: leave out --issuer")
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.layout.run_dir, 0o700)
        if idp == "local":
            _ensure_idp_installed()
        if jupyterhub and self.server != "gate":
            raise StackError("--jupyterhub runs with the gate only (not with --server mlflow-oidc-auth)")
        if jupyterhub:
            hubstack.ensure_proxy_installed()
        if self.server == "mlflow-oidc-auth":
            self._oidc_auth_venv()  # before any process starts: the first install takes minutes
        self.layout.endpoints.unlink(missing_ok=True)
        remembered = {k: v for k, v in self._env.items() if k.startswith(REMEMBERED_ENV_PREFIXES)}
        self._write_state({"components": {}, "server": self.server, "idp": idp, "env": remembered})
        timings: dict[str, float] = {}
        began = time.monotonic()
        try:
            endpoints = self._write_config(self._ports(free_ports, ports or {}, jupyterhub), external, roles_claim)
            began = time.monotonic()  # not counting a first Keycloak install (download and build, once)
            if self.idp == "keycloak":
                timings["postgres"] = self._wait_healthy("postgres", self._launch("postgres", endpoints), endpoints)
            if self.server == "mlflow-oidc-auth":
                # It fetches the provider's metadata on first use, not at start: both start at once.
                starting = [name for name in ("mlflow-oidc-auth", "idp") if name in self._base_components()]
                launched = {name: self._launch(name, endpoints) for name in starting}
                for name in reversed(starting):
                    timings[name] = self._wait_healthy(name, launched[name], endpoints)
                return self._finish_up(endpoints, began, timings)
            # MLflow is the slowest starter: launch it alongside the IdP, then wait in dependency order.
            starting = [name for name in ("mlflow", "idp") if name in COMPONENTS_OF[self.idp]]
            launched = {name: self._launch(name, endpoints) for name in starting}
            if "idp" in launched:
                timings["idp"] = self._wait_healthy("idp", launched["idp"], endpoints)
            launched["gate"] = self._launch("gate", endpoints)
            timings["gate"] = self._wait_healthy("gate", launched["gate"], endpoints)
            timings["mlflow"] = self._wait_healthy("mlflow", launched["mlflow"], endpoints)
            launched["nginx"] = self._launch("nginx", endpoints)
            timings["nginx"] = self._wait_healthy("nginx", launched["nginx"], endpoints)
            for name in hubstack.COMPONENTS if jupyterhub else ():
                launched[name] = self._launch(name, endpoints)
                timings[name] = self._wait_healthy(name, launched[name], endpoints)
        except BaseException:
            self.down()
            raise
        return self._finish_up(endpoints, began, timings)

    def _finish_up(self, endpoints: dict, began: float, timings: dict[str, float]) -> dict:
        endpoints["started_in_seconds"] = round(time.monotonic() - began, 2)
        endpoints["start_seconds"] = {name: round(seconds, 2) for name, seconds in timings.items()}
        write_private(self.layout.endpoints, json.dumps(endpoints, indent=2))
        self._say(f"stack up in {endpoints['started_in_seconds']} s ({self.layout.run_dir})")
        return endpoints

    def down(self) -> list[str]:
        """Stop every component this run folder started, in reverse order; return the names stopped."""
        state = self._read_state()
        stopped = []
        for name in reversed(ALL_COMPONENTS):
            entry = state["components"].get(name)
            if entry and alive(entry):
                _stop(name, entry)
                stopped.append(name)
        if hubstack.stop_user_servers(self.layout.run_dir):
            stopped.insert(0, "user servers")
        # The entries stay (their processes are gone): `status` and tests can still see what ran and where it logged.
        self.layout.endpoints.unlink(missing_ok=True)
        return stopped

    def restart(self, name: str, while_stopped: Callable[[], None] | None = None) -> float:
        """Stop and start one component on the same port (e.g. the IdP after its keys file is replaced).

        `while_stopped` runs between stop and start (e.g. a test changing the IdP's stored grants).
        """
        endpoints = self.endpoints()
        if name not in self._components():
            raise StackError(f"unknown component {name!r}; components are {', '.join(self._components())}")
        entry = self._read_state()["components"].get(name)
        if entry:
            _stop(name, entry)
        if while_stopped is not None:
            while_stopped()
        return self._wait_healthy(name, self._launch(name, endpoints), endpoints)

    def _components(self) -> tuple[str, ...]:
        """The components this run folder starts: the hub's too when it was started with them."""
        recorded = self._read_state()["components"]
        if any(name in recorded for name in hubstack.COMPONENTS):
            return self._base_components() + hubstack.COMPONENTS
        return self._base_components()

    def _base_components(self) -> tuple[str, ...]:
        """The components of this server side and identity provider, without the hub's."""
        if self.server == "gate":
            return COMPONENTS_OF[self.idp]
        # mlflow-oidc-auth after the provider's own parts: the IdP (and Keycloak's PostgreSQL), none for `--issuer`.
        return tuple(name for name in COMPONENTS_OF[self.idp] if name in ("postgres", "idp")) + ("mlflow-oidc-auth",)

    def status(self) -> list[tuple[str, str, dict | None]]:
        components = self._read_state()["components"]
        rows = []
        for name in self._components():
            entry = components.get(name)
            rows.append((name, "running" if entry and alive(entry) else "stopped", entry))
        return rows


def _stop(name: str, entry: dict) -> None:
    # SIGQUIT is nginx's graceful stop; the others stop on SIGTERM.
    stop_group(entry, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)


def _ensure_identity_app_installed() -> None:
    """MLflow's server side of the stack (stack/mlflow-identity, `--app-name oidc-identity`) in this Python."""
    from importlib.metadata import entry_points

    if any(e.name == "oidc-identity" for e in entry_points(group="mlflow.app")):
        return
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(STACK_DIR / "mlflow-identity")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"installing stack/mlflow-identity failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")


def _ensure_idp_installed() -> None:
    idp = STACK_DIR / "idp"
    npm_ci(idp, idp / "node_modules" / "oidc-provider")


# ------------------------------------------------------------------------------------------ CLI


def _parse_ports(values: list[str]) -> dict[str, int]:
    ports = {}
    for value in values:
        name, _, port = value.partition("=")
        if name not in DEFAULT_PORTS or not port.isdigit():
            raise StackError(f"--port takes COMPONENT=PORT with COMPONENT in {', '.join(DEFAULT_PORTS)}, got {value!r}")
        ports[name] = int(port)
    return ports


def _parser() -> argparse.ArgumentParser:
    # --run-dir is accepted before or after the command (`stack/run up --run-dir D`, as the README shows it).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--run-dir", type=Path, default=argparse.SUPPRESS, help="state, config and logs")
    parser = argparse.ArgumentParser(prog="stack/run", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start everything and wait until healthy")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed defaults")
    up.add_argument("--port", action="append", default=[], metavar="COMPONENT=PORT", help="e.g. nginx=8081")
    up.add_argument("--jupyterhub", action="store_true", help="also JupyterHub (and its proxy), signing in at the IdP")
    up.add_argument(
        "--server",
        choices=SERVERS,
        default="gate",
        help="the server side: our gate + nginx in front of MLflow (default), or mlflow-oidc-auth "
        "(`mlflow server --app-name oidc-auth` in its own Python 3.12 venv, configured for the local IdP, "
        "--idp keycloak or --issuer; see docs/servers.md)",
    )
    up.add_argument(
        "--idp", choices=("local", "keycloak"), default="local",
        help="local: the small built-in IdP (default); keycloak: a real Keycloak (downloaded once) with PostgreSQL",
    )  # fmt: skip
    up.add_argument(
        "--roles-claim", action="append", default=[], metavar="PATH",
        help="dotted claim path of the roles, repeatable (e.g. realm_access.roles, resource_access.mlflow.roles): "
        "replaces the gate policy's roles_claim; `stack/run env` hands the same paths to the clients",
    )  # fmt: skip
    existing = up.add_argument_group("an existing provider instead (gate, nginx and MLflow in front of it)")
    existing.add_argument("--issuer", help="its issuer URL, e.g. https://sso.example.org/realms/mlflow")
    existing.add_argument("--ca-file", help="CA bundle (PEM) that signed the provider's HTTPS certificate")
    existing.add_argument("--audience", default=AUDIENCE, help="the aud its access tokens carry (default %(default)s)")
    existing.add_argument("--client-id", default="jupyter", help="public client for notebooks and the CLI")
    sub.add_parser("down", parents=[common], help="stop everything this run folder started")
    sub.add_parser("status", parents=[common], help="what runs, on which ports")
    sub.add_parser("env", parents=[common], help="export lines pointing MLflow and mlflow-oidc at this stack")
    restart = sub.add_parser("restart", parents=[common], help="restart one component (same ports, same lifetimes)")
    restart.add_argument("component", choices=ALL_COMPONENTS)
    return parser


def _external(args: argparse.Namespace) -> ExternalProvider | None:
    if not args.issuer:
        if args.ca_file:
            raise StackError("--ca-file goes with --issuer (an existing provider)")
        return None
    if args.idp != "local":
        raise StackError("--issuer puts the stack in front of an existing provider: leave out --idp")
    if args.ca_file and not Path(args.ca_file).is_file():
        raise StackError(f"--ca-file {args.ca_file}: no such file")
    return ExternalProvider(
        issuer=args.issuer.rstrip("/"),
        ca_file=str(Path(args.ca_file).resolve()) if args.ca_file else None,
        audience=args.audience,
        client_id=args.client_id,
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # No parser-level default: set_defaults would reach the --run-dir action the command's parser shares, and the
    # command's default would then override a --run-dir given before the command.
    args.run_dir = getattr(args, "run_dir", DEFAULT_RUN_DIR)
    stack = LocalStack(args.run_dir, server=getattr(args, "server", None))
    try:
        if args.command == "up":
            endpoints = stack.up(
                free_ports=args.free_ports,
                ports=_parse_ports(args.port),
                jupyterhub=args.jupyterhub,
                idp=args.idp,
                external=_external(args),
                roles_claim=tuple(args.roles_claim),
            )
            where = "mlflow-oidc-auth" if args.server == "mlflow-oidc-auth" else "through the proxy"
            print(f"MLflow ({where}): {endpoints['mlflow_url']}")
            if "jupyterhub_url" in endpoints:
                print(f"JupyterHub:                 {endpoints['jupyterhub_url']}")
            print(f"OpenID Provider:            {endpoints['issuer']}")
            for user, info in endpoints["users"].items():
                print(f"login: {user} / {info['password']} ({', '.join(info['roles'])})")
            if endpoints.get("keycloak"):
                kc = endpoints["keycloak"]
                print(f"Keycloak admin console:     {kc['url']}/admin/ (user {kc['admin_user']}; see endpoints)")
            print(f"endpoints: {stack.layout.endpoints}")
        elif args.command == "down":
            stopped = stack.down()
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.command == "status":
            rows = stack.status()
            for name, status, entry in rows:
                detail = ""
                if entry and status == "running":
                    where = f"socket {entry['socket']}" if "socket" in entry else f"port {entry['port']}"
                    detail = f"pid {entry['pid']} {where}"
                print(f"{name:16} {status:8} {detail}")
            return 0 if all(status == "running" for _, status, _ in rows) else 3
        elif args.command == "env":
            endpoints = stack.endpoints()
            print(f"export MLFLOW_TRACKING_URI={endpoints['mlflow_url']}")
            print("export MLFLOW_TRACKING_AUTH=oidc")
            print(f"export MLFLOW_OIDC_ISSUER={endpoints['issuer']}")
            print(f"export MLFLOW_OIDC_CLIENT_ID={endpoints['clients']['jupyter']['client_id']}")
            print(f"export MLFLOW_OIDC_AUDIENCE={endpoints['audience']}")
            if endpoints.get("roles_claim"):
                print(f"export MLFLOW_OIDC_ROLES_CLAIM={','.join(endpoints['roles_claim'])}")
            if endpoints.get("ca_file"):
                print(f"export MLFLOW_OIDC_CA_BUNDLE={endpoints['ca_file']}")
        elif args.command == "restart":
            seconds = stack.restart(args.component)
            print(f"{args.component} restarted in {seconds:.2f} s")
    except StackError as exc:
        print(f"stack/run {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
