"""PostgreSQL for the local stack: a cluster in the run folder, its socket there, loopback TCP for Keycloak's JDBC."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .cache import cache_dir
from .errors import StackError
from .ports import HOST
from .processes import log_tail

INSTALL_HINT = "apt-get install -y postgresql"
DATABASES = ("mlflow", "keycloak")
SUPERUSER = "postgres"


@dataclass(frozen=True)
class Postgres:
    """One cluster of the stack: its binaries, data folder, socket folder and port."""

    bin_dir: Path
    root: Path  # <run>/postgres: data/ and the socket
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def mlflow_uri(self, database: str = "mlflow") -> str:
        """SQLAlchemy URI over the unix socket (no password: the socket lives in the 0700 run folder)."""
        return f"postgresql+psycopg2://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def jdbc_url(self, database: str = "keycloak") -> str:
        return f"jdbc:postgresql://{HOST}:{self.port}/{database}"

    def command(self) -> list[str]:
        """The server in the foreground, as a user other than root (PostgreSQL refuses to run as root)."""
        return _unprivileged([
            str(self.bin_dir / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
            "-h", HOST, "-p", str(self.port),
            # A throwaway local cluster: a crash may lose the last commits, never the cluster's consistency.
            "-c", "synchronous_commit=off", "-c", "max_connections=100",
        ])  # fmt: skip

    def ready(self) -> bool:
        """Whether the server accepts connections on its socket."""
        result = subprocess.run(
            [str(self.bin_dir / "pg_isready"), "-q", "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER],
            capture_output=True, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def sql(self, statement: str, database: str = "postgres") -> str:
        """Run one statement as the superuser over the socket; its output, or StackError."""
        result = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", statement],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"PostgreSQL refused a statement: {result.stderr.strip()}")
        return result.stdout.strip()

    def wait_ready(self, running, log_path: Path, timeout: float = 60.0) -> float:
        """Wait until the server answers; StackError with its log when it exits or the time is up."""
        started = time.monotonic()
        while time.monotonic() < started + timeout:
            if not running():
                raise StackError(f"postgres exited during start. Last lines of {log_path}:\n{log_tail(log_path)}")
            if self.ready():
                return time.monotonic() - started
            time.sleep(0.1)
        raise StackError(f"postgres did not accept connections within {timeout:.0f} s. See {log_path}")

    def create_databases(self, password: str) -> None:
        """The stack's databases, and the superuser's password for TCP (the socket trusts; TCP asks)."""
        existing = set(self.sql("SELECT datname FROM pg_database").split())
        for name in DATABASES:
            if name not in existing:
                self.sql(f'CREATE DATABASE "{name}"')
        # The password is generated per run folder: URL-safe characters only, so quoting is plain.
        self.sql(f"ALTER USER {SUPERUSER} PASSWORD '{password}'")


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if candidates:
        return candidates[-1].parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise StackError(f"PostgreSQL server not found: {INSTALL_HINT}")


def prepare(root: Path, port: int) -> Postgres:
    """A cluster in `root` (copied from a cached template, initdb once per PostgreSQL major), not yet started."""
    bin_dir = find_bin_dir()
    pg = Postgres(bin_dir, root, port)
    if not pg.data.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(_template(bin_dir), pg.data, symlinks=True)
        os.chmod(pg.data, 0o700)
    return pg


def _template(bin_dir: Path) -> Path:
    """An empty cluster made by initdb once and reused: initdb takes seconds, a copy a fraction of one."""
    major = bin_dir.parent.name
    template = cache_dir() / f"postgres-{major}-cluster"
    if (template / "PG_VERSION").is_file():
        return template
    work = Path(tempfile.mkdtemp(prefix=".postgres-initdb-", dir=cache_dir()))
    try:
        result = subprocess.run(
            _unprivileged([str(bin_dir / "initdb"), "-D", str(work / "data"), "-U", SUPERUSER, "-E", "UTF8",
                           "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "-N"]),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StackError(f"initdb failed ({INSTALL_HINT}?): {result.stderr.strip()[-500:]}")
        try:
            os.rename(work / "data", template)
        except OSError:
            if not (template / "PG_VERSION").is_file():  # another stack made it meanwhile: use theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template


def _unprivileged(argv: Sequence[str]) -> list[str]:
    """As root, run `argv` as the `postgres` user inside a user namespace: files stay root's, PostgreSQL is content."""
    if os.geteuid() != 0:
        return list(argv)
    try:
        entry = pwd.getpwnam("postgres")
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = 65534  # nobody: any non-root identity with a passwd entry will do
    unshare = shutil.which("unshare")
    if unshare is None:
        raise StackError("running as root needs `unshare` (util-linux) to start PostgreSQL as another user")
    return [unshare, "--user", f"--map-user={uid}", f"--map-group={gid}", *argv]
