"""The token cache: one user-only JSON file per issuer + client + subject, atomic writes, cross-process locks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..files import write_private
from .tokens import TokenSet

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class TokenCache:
    """Token files in a 0700 folder; `lock(key)` serialises refreshes of one entry across processes."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()

    def __repr__(self) -> str:
        return f"TokenCache({str(self.directory)!r})"

    # -- keys and paths --------------------------------------------------------------------------------------

    @staticmethod
    def entry_key(issuer: str, client_id: str, subject: str) -> str:
        return "tokens-" + _digest(issuer, client_id, subject)

    @staticmethod
    def _pointer_name(issuer: str, client_id: str) -> str:
        return "current-" + _digest(issuer, client_id) + ".json"

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            os.chmod(self.directory, 0o700)

    def lock(self, key: str, timeout: float = 60.0) -> FileLock:
        """A lock shared by every process using this cache entry (hold it to re-read, refresh and write)."""
        self._ensure_directory()
        return FileLock(str(self.directory / f"{key}.lock"), timeout=timeout, mode=0o600)

    # -- entries ---------------------------------------------------------------------------------------------

    def load(self, key: str) -> TokenSet | None:
        data = self._read_json(self.path(key))
        if not data or data.get("version") != FORMAT_VERSION:
            return None
        try:
            return TokenSet.from_dict(data["tokens"])
        except (KeyError, TypeError, ValueError):
            logger.warning("Ignoring a damaged token cache entry %s", self.path(key))
            return None

    def save(self, key: str, tokens: TokenSet) -> None:
        identity = tokens.identity
        self._write_json(
            self.path(key),
            {
                "version": FORMAT_VERSION,
                "issuer": identity.issuer if identity else None,
                "subject": identity.subject if identity else None,
                "saved_at": time.time(),
                "tokens": tokens.to_dict(),
            },
        )

    def delete(self, key: str) -> None:
        # The .lock file stays: unlinking a lock another process may hold would split it in two.
        self.path(key).unlink(missing_ok=True)
        self.clear_note(key)

    # -- what a session that is waiting tells other processes (`mlflow-oidc status`) -----------------------------

    def _note_path(self, key: str) -> Path:
        return self.directory / f"{key}.state.json"

    def write_note(self, key: str, note: dict[str, Any]) -> None:
        """Best effort: a note about the entry's session (e.g. the provider is unreachable); never raises."""
        try:
            self._write_json(self._note_path(key), note)
        except OSError as exc:
            logger.debug("Could not write the session note of %s: %s", key, exc)

    def read_note(self, key: str) -> dict[str, Any] | None:
        try:
            return self._read_json(self._note_path(key))
        except OSError:
            return None

    def clear_note(self, key: str) -> None:
        try:
            self._note_path(key).unlink(missing_ok=True)
        except OSError as exc:
            logger.debug("Could not remove the session note of %s: %s", key, exc)

    # -- the signed-in user of an issuer + client --------------------------------------------------------------

    def current_key(self, issuer: str, client_id: str) -> str | None:
        data = self._read_json(self.directory / self._pointer_name(issuer, client_id))
        key = data.get("key") if data else None
        return key if isinstance(key, str) and self.path(key).exists() else None

    def set_current(self, issuer: str, client_id: str, key: str) -> None:
        self._write_json(self.directory / self._pointer_name(issuer, client_id), {"key": key})

    def clear_current(self, issuer: str, client_id: str, key: str) -> None:
        """Forget the pointer, but only if it still names `key` (another user may have signed in since)."""
        if self.current_key(issuer, client_id) == key or not self.path(key).exists():
            try:
                (self.directory / self._pointer_name(issuer, client_id)).unlink()
            except FileNotFoundError:
                pass

    # -- files -----------------------------------------------------------------------------------------------

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            logger.warning("Ignoring a damaged token cache file %s", path)
            return None
        return data if isinstance(data, dict) else None

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        self._ensure_directory()
        write_private(path, json.dumps(data))
