"""The production deployment files: compose (Compose Specification), Dockerfiles, Keycloak realm, TLS and nginx.

No Docker engine runs here, so the checks are on the files themselves, with real tools where they exist: the
official Compose Specification schema (vendored by the check-jsonschema package), openssl through make-certs.sh,
and Debian's nginx serving the rendered compose config on loopback ports.
"""

from __future__ import annotations

import http.client
import importlib.resources
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from stack.gate.policy import Policy
from stack.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "stack"
COMPOSE = STACK / "compose.yaml"
DEV_OVERLAY = STACK / "keycloak" / "compose.dev.yaml"
REALM = STACK / "keycloak" / "mlflow-realm.json"
DEMO_USERS = STACK / "keycloak" / "dev" / "mlflow-demo-users.json"
MAKE_CERTS = STACK / "tls" / "make-certs.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


# ---------------------------------------------------------------------------------------------------------------
# Compose's variable interpolation (Compose Specification, "Interpolation"), so the file is checked as compose sees
# it with the values of .env.example.

_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?", re.DOTALL)


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {interpolate(k, env): interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        assert braced, f"bad interpolation ${{{match['braced']}}}"
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise MissingVariable(f"{name}: {arg}")
        if op == ":-":
            return current or interpolate(arg, env)
        if op == "-":
            return interpolate(arg, env) if current is None else current
        if op in (":+", "+"):
            return interpolate(arg, env) if current else ""
        return current or ""

    return _INTERPOLATION.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(STACK / ".env.example")


@pytest.fixture(scope="module")
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    return interpolate(raw_compose, env_example)


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    return json.loads(REALM.read_text())


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads((vendor / "compose-spec.json").read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


# ---------------------------------------------------------------------------------------------------------------
# Compose


def test_compose_file_is_valid_under_the_compose_specification_schema(raw_compose, compose):
    assert schema_errors(raw_compose) == []
    assert schema_errors(compose) == []


def test_the_schema_is_the_official_one_and_catches_mistakes(raw_compose):
    schema = compose_schema()
    assert schema["$id"] == "compose_spec.json" and "services" in schema["properties"]
    broken = json.loads(json.dumps(raw_compose))
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["nginx"]["healthcheck"]["intervall"] = "5s"
    assert len(schema_errors(broken)) >= 2


def test_every_variable_compose_needs_has_a_value_in_env_example(raw_compose, env_example):
    interpolate(raw_compose, env_example)  # raises MissingVariable for a ${NAME:?...} without a value
    with pytest.raises(MissingVariable):
        interpolate(raw_compose, {})


def test_env_example_holds_placeholders_not_secrets(env_example):
    secrets = {k: v for k, v in env_example.items() if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", k)}
    assert {"POSTGRES_PASSWORD", "CI_BOT_CLIENT_SECRET", "S3_SECRET_KEY", "JUPYTER_TOKEN"} <= set(secrets)
    assert all(value.startswith("change-me") for value in secrets.values()), secrets


def services_named_by(service: dict[str, Any], names: set[str]) -> set[str]:
    """The services whose host name this service's settings use (URLs, user@host, host:port)."""
    command = service.get("command") or []
    values = [*environment(service).values(), *([str(c) for c in command] if isinstance(command, list) else [command])]
    found = set()
    for name in names:
        host = re.escape(name)
        if any(re.search(rf"(//|@){host}(:\d+)?(/|$)|^{host}:\d+$|=\S*//{host}[:/]", v) for v in values):
            found.add(name)
    return found


def dependencies(compose: dict[str, Any], name: str) -> set[str]:
    """Everything compose starts (or waits for) before `name`, transitively."""
    seen: set[str] = set()
    todo = list(compose["services"][name].get("depends_on", {}))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo.extend(compose["services"][dep].get("depends_on", {}))
    return seen


def test_every_service_waits_for_the_services_its_settings_name(compose):
    names = set(compose["services"])
    for name, service in compose["services"].items():
        missing = services_named_by(service, names - {name}) - dependencies(compose, name)
        assert not missing, f"{name} talks to {sorted(missing)} but compose may start it before them"
    assert services_named_by(compose["services"]["mlflow"], names) >= {"postgres", "object-store"}  # the check sees


def dockerfile_of(service: dict[str, Any]) -> tuple[Path, Path]:
    build = service["build"]
    build = {"context": build} if isinstance(build, str) else build
    context = (STACK / build["context"]).resolve()
    return context, (context / build.get("dockerfile", "Dockerfile")).resolve()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_every_service_we_build_has_its_dockerfile_and_the_files_it_copies(compose):
    built = {name: s for name, s in compose["services"].items() if "build" in s}
    assert set(built) >= {"mlflow", "gate", "jupyter", "bucket-init"}
    for name, service in built.items():
        context, dockerfile = dockerfile_of(service)
        assert context.is_dir(), f"{name}: build context {context} missing"
        assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
        assert dockerfile.is_relative_to(STACK / "docker"), f"{name}: Dockerfiles live in stack/docker/"
        extra = {k: (STACK / v).resolve() for k, v in service["build"].get("additional_contexts", {}).items()}
        stages = {
            args.split()[-1]
            for op, args in dockerfile_instructions(dockerfile)
            if op == "FROM" and " AS " in args.upper()
        }
        for op, args in dockerfile_instructions(dockerfile):
            if op not in ("COPY", "ADD"):
                continue
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            source_from = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_from in stages:
                continue
            base = extra[source_from] if source_from else context
            for source in [w for w in words if not w.startswith("--")][:-1]:
                assert (base / source).exists(), f"{name}: {dockerfile.name} copies {source}, missing in {base}"


def dockerignored(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern matching it or a parent decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(fnmatch(candidate, pattern.removeprefix("!")) for candidate in candidates):
            excluded = not negated
    return excluded


def test_the_jupyter_image_context_sends_what_it_copies_and_nothing_private():
    patterns = [
        line.strip()
        for line in (STACK / "docker" / "jupyter" / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for op, args in dockerfile_instructions(STACK / "docker" / "jupyter" / "Dockerfile"):
        words = shlex.split(args)
        if op == "COPY" and not any(w.startswith("--from=") for w in words):
            copied += [w for w in words if not w.startswith("--")][:-1]
    tracked = subprocess.run(["git", "ls-files", *copied], cwd=ROOT, capture_output=True, text=True, check=True)
    files = tracked.stdout.split()
    assert "mlflow_oidc_jupyter/server/app.py" in files and "pyproject.toml" in files
    assert [f for f in files if dockerignored(patterns, f)] == [], "the image build would miss these"
    private = [".venv/bin/python", ".git/HEAD", "stack/.env", "stack/.run/secrets.json", "tests/conftest.py",
               "mlflow_oidc_jupyter/__pycache__/app.cpython-311.pyc"]  # fmt: skip
    assert [p for p in private if not dockerignored(patterns, p)] == []


def test_bind_mounts_name_files_of_the_repository_or_the_make_certs_output(compose):
    generated = {"server.crt", "server.key", "ca.crt"}  # written by stack/tls/make-certs.sh into stack/tls/certs
    for name, service in compose["services"].items():
        for source, _target in bind_mounts(service):
            path = (STACK / source).resolve()
            if path.is_relative_to(STACK / "tls" / "certs"):
                assert path.name in generated, f"{name}: {source} is not something make-certs.sh writes"
            else:
                assert path.exists(), f"{name}: mounts {source}, which does not exist"


def healthcheck_of(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    if "build" in service:
        return any(op == "HEALTHCHECK" for op, _ in dockerfile_instructions(dockerfile_of(service)[1]))
    return False


def test_services_start_in_order_and_wait_for_health(compose):
    services = compose["services"]
    wants = {
        name: {dep: cond["condition"] for dep, cond in s.get("depends_on", {}).items()} for name, s in services.items()
    }
    started: list[str] = []
    while len(started) < len(services):  # compose's order: a service once all it depends on are up
        ready = sorted(n for n in services if n not in started and set(wants[n]) <= set(started))
        assert ready, f"a dependency cycle among {sorted(set(services) - set(started))}"
        started.extend(ready)
    assert started.index("nginx") > max(started.index(n) for n in ("gate", "mlflow", "keycloak"))
    for name, deps in wants.items():
        for dep, condition in deps.items():
            if condition == "service_healthy":
                assert healthcheck_of(services[dep]), f"{name} waits for {dep} to be healthy, but it has no check"
            if condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} is a one-shot job"
    for name in ("postgres", "object-store", "keycloak", "mlflow", "gate", "nginx", "jupyter"):
        assert healthcheck_of(services[name]), f"{name} has no health check"


def test_mlflow_keeps_metadata_in_postgres_and_serves_artifacts_from_the_bucket(compose):
    env = environment(compose["services"]["mlflow"])
    assert urlsplit(env["MLFLOW_BACKEND_STORE_URI"]).scheme.startswith("postgresql")
    assert urlsplit(env["MLFLOW_BACKEND_STORE_URI"]).hostname == "postgres"
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{env_bucket(compose)}/")
    nginx = environment(compose["services"]["nginx"])
    # MLflow 3's Host check sees nginx's upstream name; its Origin check sees the public names.
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"] == nginx["MLFLOW_UPSTREAM"]
    origins = env["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    assert f"https://{nginx['SERVER_NAME']}" in origins and f"https://{nginx['JUPYTER_SERVER_NAME']}" in origins


def env_bucket(compose: dict[str, Any]) -> str:
    return environment(compose["services"]["bucket-init"])["S3_BUCKET"]


def test_the_gate_uses_the_local_stack_policy_and_keycloak_issuer(compose, realm):
    gate = compose["services"]["gate"]
    assert ("./gate/policy.yaml", "/etc/mlflow-gate/policy.yaml") in bind_mounts(gate)
    args = dict(a.removeprefix("--").split("=", 1) for a in gate["command"])
    assert args["policy"] == "/etc/mlflow-gate/policy.yaml"
    jupyter = environment(compose["services"]["jupyter"])
    assert (
        args["issuer"]
        == jupyter["MLFLOW_OIDC_ISSUER"]
        == f"https://{env_of(compose, 'nginx')['AUTH_SERVER_NAME']}/realms/{realm['realm']}"
    )
    assert args["audience"] == jupyter["MLFLOW_OIDC_AUDIENCE"] == audience_of(client(realm, "jupyter"))
    assert urlsplit(args["jwks-uri"]).hostname == "keycloak"


def env_of(compose: dict[str, Any], name: str) -> dict[str, str]:
    return environment(compose["services"][name])


def test_keycloak_shaped_claims_give_the_policy_the_users_roles(realm):
    # What Keycloak puts in an access token for a user with realm role Admin, given this realm's mappers.
    roles_claim = role_mapper(client(realm, "jupyter"))["config"]["claim.name"]
    claims = {
        "iss": "https://auth.example.org/realms/mlflow",
        "aud": ["mlflow", "account"],
        "preferred_username": "alice",
        "realm_access": {"roles": ["offline_access", "Admin", "default-roles-mlflow"]},
        roles_claim: ["offline_access", "Admin", "default-roles-mlflow"],
    }
    policy = Policy.load(STACK / "gate" / "policy.yaml")
    assert "Admin" in policy.roles(claims)
    assert policy.username(claims) == "alice"
    assert policy.decide("POST", "/api/2.0/mlflow/experiments/delete", "alice", policy.roles(claims)).allowed
    bob = policy.roles({**claims, roles_claim: ["Default"], "realm_access": {"roles": ["Default"]}})
    assert not policy.decide("POST", "/api/2.0/mlflow/experiments/delete", "bob", bob).allowed


def test_nginx_renders_the_shared_template_with_tls_and_every_placeholder(compose):
    nginx = compose["services"]["nginx"]
    mounts = dict(bind_mounts(nginx))
    assert mounts["./nginx/mlflow-proxy.conf.template"] == "/etc/nginx/templates/mlflow-proxy.conf.template"
    # The shared template's gate check is Lua: an image with lua-nginx-module and lua-resty-core built in.
    assert nginx["image"].startswith("openresty/openresty:")
    assert dict(bind_mounts(nginx))["./nginx/mlflow_gate.lua"] == "/etc/nginx/lua/mlflow_gate.lua"
    env = environment(nginx)
    assert env["LISTEN"] == "443 ssl"
    filter_ = re.compile(env["NGINX_ENVSUBST_FILTER"])
    for template in (
        STACK / "nginx" / "mlflow-proxy.conf.template",
        STACK / "docker/nginx/templates/edge.conf.template",
    ):
        for name in set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", template.read_text())):
            assert name in env and filter_.search(name), f"{template.name}: ${{{name}}} would not be rendered"
    assert {"80:80", "443:443"} <= set(nginx["ports"])
    aliases = nginx["networks"]["default"]["aliases"]
    assert set(aliases) == {env["SERVER_NAME"], env["AUTH_SERVER_NAME"], env["JUPYTER_SERVER_NAME"]}


def test_jupyterlab_is_configured_for_keycloak_the_proxy_and_the_ca(compose):
    env = environment(compose["services"]["jupyter"])
    nginx = environment(compose["services"]["nginx"])
    assert env["MLFLOW_OIDC_CLIENT_ID"] == "jupyter"
    assert env["MLFLOW_TRACKING_URI"] == f"https://{nginx['SERVER_NAME']}"
    assert "offline_access" in env["MLFLOW_OIDC_SCOPES"].split()
    assert env["MLFLOW_OIDC_CA_BUNDLE"] == env["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    assert env["MLFLOW_OIDC_CA_BUNDLE"] in {t for _, t in bind_mounts(compose["services"]["jupyter"])}


def test_the_jupyter_config_file_gives_the_extension_its_settings_from_compose(compose, monkeypatch):
    from traitlets.config import Config

    from mlflow_oidc_jupyter.server.app import MLflowOIDC

    env = environment(compose["services"]["jupyter"])
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = Config()
    runpy.run_path(str(STACK / "docker" / "jupyter" / "jupyter_server_config.py"), {"get_config": lambda: config})

    app = MLflowOIDC(config=config)  # unknown trait names would be ignored here, so each one is read back
    assert app.issuer == env["MLFLOW_OIDC_ISSUER"] and app.upstream_url == env["MLFLOW_TRACKING_URI"]
    assert app.client_id == env["MLFLOW_OIDC_CLIENT_ID"] and app.audience == env["MLFLOW_OIDC_AUDIENCE"]
    assert app.ca_bundle == env["MLFLOW_OIDC_CA_BUNDLE"] and "offline_access" in app.scopes


def test_demo_users_and_passwords_exist_only_in_the_dev_overlay(realm, env_example):
    assert all("serviceAccountClientId" in user for user in realm.get("users", []))
    assert not any(user.get("credentials") for user in realm.get("users", []))
    production = COMPOSE.read_text() + REALM.read_text() + json.dumps(env_example)
    assert "alice" not in production and "bob" not in production and "demo-password" not in production
    users = {u["username"]: u for u in json.loads(DEMO_USERS.read_text())["users"]}
    assert "Admin" in users["alice"]["realmRoles"] and "Admin" not in users["bob"]["realmRoles"]
    assert "Default" in users["bob"]["realmRoles"]
    assert all(not c["temporary"] for u in users.values() for c in u["credentials"])
    overlay = yaml.safe_load(DEV_OVERLAY.read_text())
    job = overlay["services"]["keycloak-demo-users"]
    assert job["depends_on"] == {"keycloak": {"condition": "service_healthy"}}
    assert ("./keycloak/dev", "/opt/demo") in bind_mounts(job)
    merged = json.loads(json.dumps(yaml.safe_load(COMPOSE.read_text())))
    merged["services"].update(overlay["services"])
    assert schema_errors(merged) == []


# ---------------------------------------------------------------------------------------------------------------
# Keycloak realm


def client(realm: dict[str, Any], client_id: str) -> dict[str, Any]:
    return next(c for c in realm["clients"] if c["clientId"] == client_id)


def mappers(client_rep: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [m for m in client_rep.get("protocolMappers", []) if m["protocolMapper"] == kind]


def audience_of(client_rep: dict[str, Any]) -> str:
    (mapper,) = mappers(client_rep, "oidc-audience-mapper")
    assert mapper["config"]["access.token.claim"] == "true"
    return mapper["config"]["included.custom.audience"]


def role_mapper(client_rep: dict[str, Any]) -> dict[str, Any]:
    (mapper,) = mappers(client_rep, "oidc-usermodel-realm-role-mapper")
    return mapper


# What the realm file makes of Keycloak (roles, clients, scopes, lifetimes, events, redirect URIs, token contents) is
# asserted against a running Keycloak through its admin API: tests/keycloak/test_realm_live.py.


def test_jupyterhub_is_a_confidential_client_with_the_hubs_exact_callback(realm):
    hub = client(realm, "jupyterhub")
    assert hub["publicClient"] is False and hub["secret"] == "${JUPYTERHUB_CLIENT_SECRET}"
    assert hub["standardFlowEnabled"] is True and not hub["directAccessGrantsEnabled"]
    assert hub["attributes"]["pkce.code.challenge.method"] == "S256"
    assert hub["redirectUris"] == ["https://${JUPYTER_SERVER_NAME}/hub/oauth_callback"]
    assert hub["attributes"]["post.logout.redirect.uris"] == "https://${JUPYTER_SERVER_NAME}/hub/login"
    assert "offline_access" in hub["optionalClientScopes"]


def test_realm_placeholders_are_given_to_keycloak_by_compose(compose):
    placeholders = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)\}", REALM.read_text()))
    assert placeholders == {"JUPYTER_SERVER_NAME", "CI_BOT_CLIENT_SECRET", "JUPYTERHUB_CLIENT_SECRET"}
    assert placeholders <= set(environment(compose["services"]["keycloak"]))


# ---------------------------------------------------------------------------------------------------------------
# TLS and nginx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory, compose) -> Path:
    out = tmp_path_factory.mktemp("certs")
    nginx = environment(compose["services"]["nginx"])
    names = [nginx["SERVER_NAME"], nginx["AUTH_SERVER_NAME"], nginx["JUPYTER_SERVER_NAME"]]
    subprocess.run([str(MAKE_CERTS), "--out", str(out), *names], check=True, capture_output=True, timeout=30)
    return out


def test_make_certs_makes_a_ca_and_a_server_certificate_for_every_name(certs, compose):
    from cryptography import x509

    assert {p.name for p in certs.iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key"}
    assert (certs / "server.key").stat().st_mode & 0o077 == 0 and (certs / "ca.key").stat().st_mode & 0o077 == 0
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    leaf, chain = x509.load_pem_x509_certificates((certs / "server.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert chain == ca and leaf.issuer == ca.subject
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    nginx = environment(compose["services"]["nginx"])
    assert set(sans) == {nginx["SERVER_NAME"], nginx["AUTH_SERVER_NAME"], nginx["JUPYTER_SERVER_NAME"]}
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"), str(certs / "server.crt")])
    assert verify.returncode == 0


def test_make_certs_keeps_the_ca_when_it_reissues_the_server_certificate(certs, tmp_path):
    again = tmp_path / "certs"
    shutil.copytree(certs, again)
    subprocess.run([str(MAKE_CERTS), "--out", str(again), "mlflow.example.org"], check=True, capture_output=True)
    assert (again / "ca.crt").read_bytes() == (certs / "ca.crt").read_bytes(), "clients keep trusting it"
    assert (again / "server.crt").read_bytes() != (certs / "server.crt").read_bytes()


class ComposeNginx:
    """The compose nginx config, rendered by its entrypoint, served by Debian's nginx on loopback ports.

    The image is OpenResty (nginx with the Lua module built in); Debian's nginx loads the same module
    (libnginx-mod-http-lua) with load_module, and paths of the image are mapped to files here.
    """

    def __init__(self, root: Path, compose: dict[str, Any], certs: Path) -> None:
        self.root = root
        self.http_port, self.https_port = free_port(), free_port()
        env = environment(compose["services"]["nginx"])
        self.names = env
        conf_d = root / "conf.d"
        # Upstreams on 127.0.0.1 (nothing listens there: the gate being down must fail closed); logs into files.
        values = {
            **{k: env[k] for k in re.findall(r"\(([^)]*)\)", env["NGINX_ENVSUBST_FILTER"])[0].split("|")},
            "MLFLOW_UPSTREAM": f"127.0.0.1:{free_port()}",
            "GATE_UPSTREAM": f"127.0.0.1:{free_port()}",
            "KEYCLOAK_UPSTREAM": f"127.0.0.1:{free_port()}",
            "JUPYTER_UPSTREAM": f"127.0.0.1:{free_port()}",
            "ACCESS_LOG": str(root / "access.log"),
        }
        mounts = {target: (STACK / source).resolve() for source, target in bind_mounts(compose["services"]["nginx"])}
        values["GATE_LUA_DIR"] = str(mounts[f"{env['GATE_LUA_DIR']}/mlflow_gate.lua"].parent)
        templates = root / "templates"
        templates.mkdir()
        for target, source in mounts.items():
            if target.startswith("/etc/nginx/templates/"):
                shutil.copy(source, templates / Path(target).name)
        # The image's entrypoint renders them, then runs its arguments (here: nothing more).
        entrypoint = [*compose["services"]["nginx"]["entrypoint"][:-1], str(mounts["/etc/nginx/entrypoint.sh"])]
        render_env = {
            "PATH": os.environ["PATH"],
            "NGINX_ENVSUBST_FILTER": env["NGINX_ENVSUBST_FILTER"],
            "NGINX_ENVSUBST_TEMPLATE_DIR": str(templates),
            "NGINX_ENVSUBST_OUTPUT_DIR": str(conf_d),
            **values,
        }
        subprocess.run([*entrypoint, "true"], env=render_env, check=True, timeout=30)
        for conf in conf_d.iterdir():
            assert not re.search(r"\$\{[A-Z]", conf.read_text()), f"{conf.name}: a placeholder was left unrendered"
        for conf in conf_d.iterdir():
            conf.write_text(self._loopback_ports(conf.read_text()))
        main = mounts["/etc/nginx/nginx.conf"].read_text()
        # Debian's nginx loads the Lua module OpenResty has built in.
        lua = "".join(
            f"load_module /usr/lib/nginx/modules/{m}.so;\n" for m in ("ndk_http_module", "ngx_http_lua_module")
        )
        main = lua + main.replace("user nobody nogroup;", "user root root;")  # workers need tmp_path
        main = main.replace("/usr/local/openresty/nginx/conf/mime.types", "/etc/nginx/mime.types")
        main = main.replace("/etc/nginx/conf.d/", f"{conf_d}/").replace("/etc/nginx/tls/", f"{certs}/")
        main = main.replace("/var/run/nginx.pid", str(root / "nginx.pid")).replace(
            "/dev/stderr", str(root / "error.log")
        )
        temp_paths = "".join(
            f"    {kind}_temp_path {root / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = root / "nginx.conf"
        self.conf.write_text(main.replace("http {\n", "http {\n" + temp_paths, 1))

    def healthcheck(self, compose: dict[str, Any], http_port: int) -> int:
        """Exit status of the compose health check, aimed at http_port instead of the container's port 80."""
        test = compose["services"]["nginx"]["healthcheck"]["test"]
        assert test[0] == "CMD"
        command = [arg.replace("127.0.0.1/80", f"127.0.0.1/{http_port}") for arg in test[1:]]
        return subprocess.run(command, capture_output=True, timeout=30).returncode

    def _loopback_ports(self, text: str) -> str:
        text = re.sub(r"listen 443 ssl", f"listen 127.0.0.1:{self.https_port} ssl", text)
        return re.sub(r"listen 80 ", f"listen 127.0.0.1:{self.http_port} ", text)

    def command(self, *args: str) -> list[str]:
        return [NGINX, "-p", str(self.root), "-c", str(self.conf), "-e", str(self.root / "error.log"), *args]


@pytest.fixture(scope="module")
def compose_nginx(tmp_path_factory: pytest.TempPathFactory, compose, certs) -> ComposeNginx:
    return ComposeNginx(tmp_path_factory.mktemp("nginx"), compose, certs)


def test_the_rendered_compose_nginx_config_passes_nginx_t(compose_nginx):
    result = subprocess.run(compose_nginx.command("-t"), capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    rendered = (compose_nginx.root / "conf.d" / "mlflow-proxy.conf").read_text()
    assert f"server_name {compose_nginx.names['SERVER_NAME']};" in rendered
    assert 'require("mlflow_gate").authorize()' in rendered
    assert 'lua_package_path "/etc/nginx/lua/?.lua;;";' not in rendered, "rendered for this machine's files"


def https_get(nginx: ComposeNginx, host: str, path: str, ca: Path) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", nginx.https_port, context=context, timeout=10)
    # SNI and certificate check for the public name while connecting to loopback.
    connection.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", nginx.https_port), timeout=10), server_hostname=host
    )
    connection.request("GET", path, headers={"Host": host})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def test_compose_nginx_serves_tls_for_each_name_redirects_http_and_fails_closed(compose_nginx, certs, compose):
    process = subprocess.Popen(compose_nginx.command("-g", "daemon off;"), start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", compose_nginx.https_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        names = compose_nginx.names
        ca = certs / "ca.crt"

        plain = http.client.HTTPConnection("127.0.0.1", compose_nginx.http_port, timeout=10)
        plain.request("POST", "/api/2.0/mlflow/runs/create?x=1", body=b"{}", headers={"Host": names["SERVER_NAME"]})
        redirect = plain.getresponse()
        assert redirect.status == 308
        assert redirect.getheader("Location") == f"https://{names['SERVER_NAME']}/api/2.0/mlflow/runs/create?x=1"
        # The container's health check sees that redirect; a port nobody serves fails it.
        assert compose_nginx.healthcheck(compose, compose_nginx.http_port) == 0
        assert compose_nginx.healthcheck(compose, free_port()) != 0

        # MLflow through the shared server block: the gate is down, so no request reaches MLflow (fail closed).
        status, headers, body = https_get(
            compose_nginx, names["SERVER_NAME"], "/api/2.0/mlflow/experiments/search?code=s3cr3t", ca
        )
        assert status == 503 and json.loads(body)["error_code"] == "TEMPORARILY_UNAVAILABLE"

        # Keycloak: public endpoints proxied (upstream down here: 502), the admin console not exposed at all.
        assert (
            https_get(compose_nginx, names["AUTH_SERVER_NAME"], "/realms/mlflow/.well-known/openid-configuration", ca)[
                0
            ]
            == 502
        )
        status, headers, _ = https_get(compose_nginx, names["AUTH_SERVER_NAME"], "/admin/master/console/", ca)
        assert status == 404 and "max-age" in headers["strict-transport-security"]
        assert https_get(compose_nginx, names["JUPYTER_SERVER_NAME"], "/lab", ca)[0] == 502

        # A name nginx does not serve gets no certificate at all.
        with pytest.raises(ssl.SSLError):
            https_get(compose_nginx, "other.example.org", "/", ca)

        log = (compose_nginx.root / "access.log").read_text()
        assert "user=- " in log and '"GET /api/2.0/mlflow/experiments/search"' in log
        assert "s3cr3t" not in log and "x=1" not in log, "query strings never reach the access log"
    finally:
        os.killpg(process.pid, signal.SIGQUIT)
        process.wait(timeout=10)


def test_requests_with_unknown_names_never_fall_through_to_mlflow(compose_nginx):
    edge = (compose_nginx.root / "conf.d" / "edge.conf").read_text()
    assert "default_server" in edge and "ssl_reject_handshake on;" in edge
    assert fnmatch(compose_nginx.conf.read_text(), "*include *mlflow-proxy.conf;*include *edge.conf;*")
