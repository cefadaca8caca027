"""Sign-in latency: device approval to the first logged metric; Jupyter's sign-in callback to the rendered MLflow UI.

    .venv/bin/python bench/signin_latency.py [--rounds 3] [--short]

Starts its own local stack and a `jupyter server` with our extension (upstream: nginx + gate) on free ports.
- Device flow, in this process: `Session.login_device` shows the code, another thread approves it on the IdP's
  own pages as bob; measured from the approval's last page to the signed-in session (the client's polling
  interval, which the IdP does not set: RFC 8628's 5 s) and on to the first metric logged with
  `MLFLOW_TRACKING_AUTH=oidc` (`mlflow.start_run` + `log_metric` through nginx + gate).
- Browser: Debian's Chromium (Playwright, never `playwright install`) opens /mlflow/, presses Sign in, signs in
  at the IdP as alice; measured from the browser's request to `oauth/callback` to the MLflow UI showing the
  "Default" experiment (UI loaded through our proxy, experiments fetched with the new session). Signed out
  between rounds; a fresh browser context each round.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from benchlib import heading, local_stack, parser, table

from mlflow_oidc_jupyter.oidc.default import set_default_session
from mlflow_oidc_jupyter.oidc.session import Session
from mlflow_oidc_jupyter.settings import Settings
from stack.jupyter import JupyterProcess, extension_args, isolated_env, jupyter_argv
from stack.ports import free_port
from tests.support.idp_pages import approve_device

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]  # fmt: skip


def _device_round(password: str) -> tuple[float, float]:
    """Seconds from approval to signed in, and from signed in to the first metric logged."""
    import mlflow

    session = Session(Settings.load(), use_cache=False, background_refresh=False)
    approved: list[float] = []

    def approve(uri: str) -> None:
        approve_device(uri, "bob", password)
        approved.append(time.perf_counter())

    approver: threading.Thread | None = None

    def on_prompt(device) -> None:  # type: ignore[no-untyped-def]
        nonlocal approver
        approver = threading.Thread(target=approve, args=(device.verification_uri_complete,))
        approver.start()

    session.login_device(on_prompt)
    signed_in = time.perf_counter()
    if approver is not None:
        approver.join()
    previous = set_default_session(session)
    try:
        with contextlib.redirect_stdout(io.StringIO()), mlflow.start_run():  # MLflow prints the run's URL
            mlflow.log_metric("first", 1.0)
        logged = time.perf_counter()
    finally:
        set_default_session(previous)
        session.close()
    return signed_in - approved[0], logged - signed_in


def _browser_round(browser, ui_url: str, token: str, password: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the browser's request to oauth/callback to the UI showing the Default experiment."""
    context = browser.new_context()
    try:
        page = context.new_page()
        callbacks = []
        page.on("request", lambda r: callbacks.append(r) if "/oauth/callback" in r.url else None)
        page.goto(f"{ui_url}?token={token}")
        page.click("#mlflow-oidc-action")
        page.fill("#username", "alice")
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.get_by_text("Default", exact=True).first.wait_for(timeout=120_000)
        rendered = time.time()
        started = callbacks[0].timing["startTime"] / 1000  # epoch ms, taken by the browser
        return rendered - started
    finally:
        context.close()


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=3, help="sign-ins of each kind (default %(default)s)")
    args = p.parse_args()
    if args.short:
        args.rounds = 1

    heading("Sign-in latency", f"{args.rounds} sign-ins of each kind; medians (min-max).")
    workdir = Path(tempfile.mkdtemp(prefix="bench-signin-"))
    jupyter: JupyterProcess | None = None
    try:
        with local_stack() as (_stack, endpoints):
            os.environ.update(
                MLFLOW_TRACKING_URI=endpoints["mlflow_url"],
                MLFLOW_TRACKING_AUTH="oidc",
                MLFLOW_OIDC_ISSUER=endpoints["issuer"],
                MLFLOW_OIDC_CLIENT_ID=endpoints["clients"]["jupyter"]["client_id"],
                MLFLOW_OIDC_AUDIENCE=endpoints["audience"],
                MLFLOW_OIDC_CACHE_DIR=str(workdir / "cache"),
                MLFLOW_DISABLE_TELEMETRY="true",
            )
            device = [_device_round(endpoints["users"]["bob"]["password"]) for _ in range(args.rounds)]

            port, token = free_port(), os.urandom(16).hex()
            (workdir / "root").mkdir()
            jupyter = JupyterProcess(
                jupyter_argv("jupyter_server", port=port, token=token, root_dir=workdir / "root",
                             extra=extension_args(endpoints)),
                isolated_env(workdir / "home", workdir / "runtime"),
                workdir / "jupyter.log", f"http://127.0.0.1:{port}/", token,
            )  # fmt: skip
            jupyter.start()
            from playwright.sync_api import sync_playwright

            browser_times = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                try:
                    alice = endpoints["users"]["alice"]["password"]
                    signed = {"Authorization": f"token {token}", "Accept": "application/json"}
                    for _ in range(args.rounds):
                        browser_times.append(_browser_round(browser, jupyter.url + "mlflow/", token, alice))
                        requests.post(jupyter.url + "mlflow/oauth/logout", headers=signed, timeout=30)
                finally:
                    browser.close()
    finally:
        if jupyter is not None:
            jupyter.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    polls, metrics = [d[0] for d in device], [d[1] for d in device]
    rows = [
        ("device: approval -> signed in (client polling)", cell(polls)),
        ("device: signed in -> first metric logged", cell(metrics)),
        ("device: approval -> first metric logged", cell([a + b for a, b in device])),
        ("browser: oauth/callback -> MLflow UI rendered", cell(browser_times)),
    ]
    print(table(("step", "seconds, median (min-max)"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
