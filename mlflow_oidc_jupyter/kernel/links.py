"""MLflow's run links pointed at Jupyter's `/mlflow/` UI, and the runs this kernel starts told to its widgets.

MLflow prints "View run ... at <tracking URI>/#/..." when a run ends; behind an identity-aware proxy that address
answers a browser with a JSON 401. The UI the user can open is the Jupyter server's `{base_url}{prefix}/`. MLflow
has no hook for these lines, so two public methods of `MlflowClient` (which `mlflow.start_run`/`end_run` use) are
wrapped while a kernel login is active.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunLink:
    """A run this kernel started, as the widget links to it."""

    experiment_id: str
    run_id: str
    run_name: str
    status: str

    @property
    def fragment(self) -> str:
        """The UI's route to the run (hash routing), appended to the UI's URL."""
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


class _Rewriting:
    """A stdout that replaces the tracking server's UI address with Jupyter's, line by line as written."""

    def __init__(self, stream: TextIO, old: str, new: str) -> None:
        self._stream, self._old, self._new = stream, old, new

    def write(self, text: str) -> int:
        self._stream.write(text.replace(self._old, self._new))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class RunLinks:
    """Install once per kernel; `ui_url()` is the UI's absolute URL (ending in `/`), None to leave links alone."""

    def __init__(self, ui_url: Callable[[], str | None], on_run: Callable[[RunLink], None]) -> None:
        self._ui_url = ui_url
        self._on_run = on_run
        self._originals: dict[str, Any] = {}

    def install(self) -> None:
        if self._originals:
            return
        from mlflow import MlflowClient

        for name, wrap in (("set_terminated", self._wrap_set_terminated), ("create_run", self._wrap_create_run)):
            original = getattr(MlflowClient, name)
            self._originals[name] = original
            setattr(MlflowClient, name, wrap(original))

    def uninstall(self) -> None:
        if not self._originals:
            return
        from mlflow import MlflowClient

        for name, original in self._originals.items():
            setattr(MlflowClient, name, original)
        self._originals.clear()

    def _wrap_set_terminated(self, original: Callable[..., Any]) -> Callable[..., Any]:
        links = self

        @functools.wraps(original)
        def set_terminated(client: Any, *args: Any, **kwargs: Any) -> Any:
            ui = links._ui_url()
            if not ui:
                return original(client, *args, **kwargs)
            # MLflow prints the run's address at the tracking URI it uses (`client.tracking_uri`).
            host = client.tracking_uri.rstrip("/")
            with contextlib.redirect_stdout(_Rewriting(sys.stdout, f"{host}/#/", f"{ui}#/")):
                return original(client, *args, **kwargs)

        return set_terminated

    def _wrap_create_run(self, original: Callable[..., Any]) -> Callable[..., Any]:
        links = self

        @functools.wraps(original)
        def create_run(client: Any, *args: Any, **kwargs: Any) -> Any:
            run = original(client, *args, **kwargs)
            try:
                info = run.info
                links._on_run(RunLink(info.experiment_id, info.run_id, info.run_name or info.run_id, info.status))
            except Exception:
                logger.debug("Could not report the new run", exc_info=True)
            return run

        return create_run
