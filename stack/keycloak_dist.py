"""Keycloak's server distribution: downloaded from Maven Central once per version, verified, built, cached."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .cache import cache_dir
from .errors import StackError

log = logging.getLogger(__name__)

# The version compose.yaml pins too (quay.io/keycloak/keycloak:26.4); MLFLOW_OIDC_KEYCLOAK_VERSION picks another.
KEYCLOAK_VERSION = "26.4.7"
VERSION_ENV = "MLFLOW_OIDC_KEYCLOAK_VERSION"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
# Build-time options, fixed once in the cached build so each start can be `start --optimized` (no re-augmentation).
BUILD_OPTIONS = ("--db=postgres",)
JAVA_HINT = "install Java 17+ (apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"


def version() -> str:
    return os.environ.get(VERSION_ENV) or KEYCLOAK_VERSION


def find_java_home() -> Path:
    """A Java 17+ home: $JAVA_HOME, else Debian's OpenJDK 17/21, else any JDK under /usr/lib/jvm."""
    if os.environ.get("JAVA_HOME"):
        # An explicit choice is honoured or refused, never silently replaced by another Java.
        home = Path(os.environ["JAVA_HOME"])
        if (home / "bin" / "java").is_file() and _java_major(home) >= 17:
            return home
        raise StackError(f"JAVA_HOME={home} is not a Java 17 or newer: {JAVA_HINT}")
    candidates = []
    jvm = Path("/usr/lib/jvm")
    for name in ("java-17-openjdk-amd64", "java-21-openjdk-amd64", "java-17-openjdk-arm64", "java-21-openjdk-arm64"):
        candidates.append(jvm / name)
    candidates.extend(sorted(jvm.glob("*"), reverse=True) if jvm.is_dir() else [])
    for home in candidates:
        if (home / "bin" / "java").is_file() and _java_major(home) >= 17:
            return home
    java = shutil.which("java")
    if java:
        home = Path(os.path.realpath(java)).parent.parent
        if _java_major(home) >= 17:
            return home
    raise StackError(f"Keycloak needs Java 17 or newer and none was found: {JAVA_HINT}")


def _java_major(home: Path) -> int:
    release = home / "release"
    try:
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                return int(line.split("=", 1)[1].strip('"').split(".")[0])
    except (OSError, ValueError):
        pass
    # No release file (a JRE-only package): trust a known Debian folder name over nothing.
    digits = "".join(c if c.isdigit() else " " for c in home.name).split()
    return int(digits[0]) if digits else 0


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One installer at a time per version, across processes (parallel test sessions share the cache)."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def install(ver: str | None = None, say=log.info) -> Path:
    """The built Keycloak home for `ver`, installing it first if the cache has none; returns KC_HOME."""
    ver = ver or version()
    home = cache_dir() / f"keycloak-{ver}"
    stamp = home / ".built"
    wanted = " ".join(BUILD_OPTIONS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return home
    java_home = find_java_home()
    with _locked(cache_dir() / f"keycloak-{ver}.lock"):
        if stamp.is_file() and stamp.read_text() == wanted:
            return home
        work = Path(tempfile.mkdtemp(prefix=f".keycloak-{ver}-", dir=cache_dir()))
        try:
            began = time.monotonic()
            archive = _download(ver, work)
            say(f"keycloak {ver}: downloaded in {time.monotonic() - began:.1f} s")
            began = time.monotonic()
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(work)
            archive.unlink()
            unpacked = work / f"keycloak-{ver}"
            for script in (unpacked / "bin").glob("*.sh"):
                script.chmod(0o755)  # zipfile drops the mode bits
            say(f"keycloak {ver}: unpacked in {time.monotonic() - began:.1f} s")
            began = time.monotonic()
            _build(unpacked, java_home)
            say(f"keycloak {ver}: optimized build in {time.monotonic() - began:.1f} s")
            (unpacked / ".built").write_text(wanted)
            shutil.rmtree(home, ignore_errors=True)
            os.rename(unpacked, home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return home


def _download(ver: str, work: Path) -> Path:
    """The distribution zip, checked against the SHA-256 Maven Central publishes beside it."""
    url = f"{MAVEN_CENTRAL}/org/keycloak/keycloak-quarkus-dist/{ver}/keycloak-quarkus-dist-{ver}.zip"
    target = work / f"keycloak-{ver}.zip"
    try:
        with urllib.request.urlopen(url + ".sha256", timeout=30) as response:  # noqa: S310 (fixed https URL)
            expected = response.read().decode().split()[0].strip().lower()
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:  # noqa: S310
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise StackError(
            f"Keycloak {ver} download failed ({exc.code} from Maven Central): check the version "
            f"({VERSION_ENV}, default {KEYCLOAK_VERSION}) or retry"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StackError(
            f"Keycloak {ver} download failed ({reason}): check the network to Maven Central, retry"
        ) from None
    if digest.hexdigest() != expected:
        raise StackError(f"Keycloak {ver} download is corrupt (SHA-256 mismatch): retry")
    return target


def _build(home: Path, java_home: Path) -> None:
    env = {**os.environ, "JAVA_HOME": str(java_home)}
    result = subprocess.run(
        [str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise StackError(f"`kc.sh build` of Keycloak failed:\n{tail}")
