"""Fixtures: the real local stack (IdP, gate, MLflow, nginx) on free loopback ports, stopped by PID afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from stack.localstack import LocalStack
from stack.waiting import unix_http_get

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


#: How long an xdist controller given SIGTERM waits for its workers to stop their stacks (Keycloak takes longest).
WORKER_STOP_TIMEOUT = 180.0


def _interrupt_on_sigterm(_signum: int, _frame: object) -> None:
    # pytest tears fixtures down on KeyboardInterrupt, not on SIGTERM: a CI timeout or `kill` must still stop stacks.
    _stop_xdist_workers()
    raise KeyboardInterrupt("SIGTERM")


def _stop_xdist_workers() -> None:
    """As the xdist controller: pass SIGTERM on to each worker (by PID) and wait until they have torn down.

    Otherwise the controller's own exit kills its workers outright, and the stacks they started keep running."""
    import psutil

    workers = []
    for child in psutil.Process().children():
        try:
            if "exec(eval(sys.stdin.readline()))" in " ".join(child.cmdline()):  # execnet's popen worker
                child.send_signal(signal.SIGTERM)
                workers.append(child)
        except psutil.Error:
            continue

    def tearing_down(worker: psutil.Process) -> bool:
        # A worker that has torn down waits for this controller, which is in this handler: it has exited, or no
        # process it started (stack components, the Playwright driver) is left.
        try:
            live = [c for c in worker.children() if c.status() != psutil.STATUS_ZOMBIE]
            return worker.status() != psutil.STATUS_ZOMBIE and bool(live)
        except psutil.Error:
            return False

    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    while any(tearing_down(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.2)


signal.signal(signal.SIGTERM, _interrupt_on_sigterm)

# Tests never phone home and never read the developer's own config or token cache.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


#: Fixtures that start real components (IdP, gate, nginx, MLflow, Jupyter, Chromium, or processes of their own):
#: a test that uses one, directly or through another fixture, is in the `stack` tier; the rest run in seconds.
STACK_FIXTURES = frozenset(
    {"stack", "make_stack", "start_jupyter", "playwright", "chromium", "keycloak", "oidc_auth", "hub_stack"}
)


#: `./run test` runs the whole suite with pytest-xdist, one worker per group (`-n` = len(GROUPS), `--dist loadscope`
#: with the scope of a test = its group, see pytest_xdist_make_scheduler): a group's tests run in one process, in
#: collection order, so each session fixture (a stack, a Keycloak, Chromium) starts once per group that needs it.
#: The groups are balanced by `--durations` figures; the two Keycloak starts (the session's, and the hub's own realm)
#: are in different groups so that they overlap with the rest. A test belongs to the group with the longest prefix of
#: its node id; `[name]` also asks for a parameter id `name` (the provider of tests/hub and tests/oidc_auth).
GROUPS: dict[str, tuple[str, ...]] = {
    # Keycloak with the hub's realm starts first (3-5 min), alone; then tests that need no stack of their own.
    "hub-keycloak": ("tests/hub/[keycloak]", "tests/server/test_launcher.py::test_the_prebuilt_labextension",
                     "tests/test_stack_run_options.py"),
    "hub": ("tests/hub/", "tests/oidc_auth/[local]", "tests/test_stack_lifecycle.py"),
    # The session's Keycloak (tests/support/keycloak.py), shared by these two folders.
    "keycloak": ("tests/keycloak/", "tests/oidc_auth/"),
    "server": ("tests/server/",),
    "kernel": ("tests/test_kernel_", "tests/test_notebooks.py", "tests/test_mlflow_plugin.py",
               "tests/test_session.py", "tests/test_security.py"),
    "stack": ("tests/test_bench.py", "tests/test_stack"),
    "rest": ("tests/", "tests/server/test_base_url.py"),
}  # fmt: skip


def group_of(nodeid: str) -> str:
    """The group of a test, from its node id: the group with the longest matching prefix (a parameter, longer)."""
    name, _, param_ids = nodeid.partition("[")
    params = param_ids.rstrip("]").split("-")
    best, group_found = (-1, False), "rest"
    for group, prefixes in GROUPS.items():
        for prefix in prefixes:
            where, _, param = prefix.partition("[")
            specific = (len(where), bool(param))
            if name.startswith(where) and (not param or param.rstrip("]") in params) and specific > best:
                best, group_found = specific, group
    return group_found


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """With `--dist loadscope`, a test's scope is its group: whole groups go to workers, never single tests."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        slow = item.get_closest_marker("slow") or item.get_closest_marker("browser")
        if slow or STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.stack)
        if "keycloak" in getattr(item, "fixturenames", ()):
            # Whichever test comes first waits for the session's Keycloak start too (minutes under load).
            item.add_marker(pytest.mark.timeout(FIRST_START_TIMEOUT))


class Stack:
    """A running local stack as tests see it: its endpoints, its run folder, and one-component restarts."""

    def __init__(self, local: LocalStack, endpoints: dict) -> None:
        self.local = local
        self.endpoints = endpoints
        self.run_dir = local.layout.run_dir

    @property
    def issuer(self) -> str:
        return self.endpoints["issuer"]

    @property
    def mlflow_url(self) -> str:
        return self.endpoints["mlflow_url"]

    def password(self, user: str) -> str:
        return self.endpoints["users"][user]["password"]

    def restart(self, component: str, while_stopped: Callable[[], None] | None = None) -> None:
        self.local.restart(component, while_stopped)

    def access_log(self, until: str | None = None, timeout: float = 10.0) -> str:
        """nginx's access log; with `until`, first wait for a line containing it (nginx logs after it answered)."""
        path = self.run_dir / "nginx" / "access.log"
        deadline = time.monotonic() + timeout
        while True:
            text = path.read_text()
            if until is None or until in text or time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def log(self, component: str) -> str:
        return self.local.layout.log(component).read_text(errors="replace")

    def mlflow_behind_proxy(self, path: str, **params: str) -> dict:
        """GET straight from MLflow's Unix socket (no gate), as an admin on the host would."""
        status, body = unix_http_get(self.local.layout.mlflow_socket, f"{path}?{urlencode(params)}")
        assert status == 200, body[:300]
        return json.loads(body)


@pytest.fixture(scope="session")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Start a stack with extra environment (e.g. short TTLs); every stack started is stopped at session end."""
    started: list[LocalStack] = []

    def make(env: dict[str, str] | None = None, name: str = "stack", jupyterhub: bool = False) -> Stack:
        local = LocalStack(tmp_path_factory.mktemp(name), env=env, log=lambda _message: None)
        started.append(local)
        endpoints = local.up(free_ports=True, jupyterhub=jupyterhub)
        return Stack(local, endpoints)

    try:
        yield make
    finally:
        for local in reversed(started):
            local.down()


@pytest.fixture(scope="session")
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """The shared stack with default lifetimes."""
    return make_stack(name="stack")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


#: Every browser launched this session (fixtures and tests), so that the session's end can close any left open.
_LAUNCHED: list = []


@pytest.fixture(scope="session")
def playwright(request: pytest.FixtureRequest) -> Iterator:
    """One Playwright for the whole test session: its sync API refuses to start a second one beside it.

    Its teardown never hangs the suite: browsers are closed first, then the driver (node) is watched by PID while
    Playwright stops it (tests/support/driver.py); one that does not exit is reported with the cause and ended.
    """
    import psutil
    from playwright.sync_api import sync_playwright

    from .support.driver import DriverWatch, driver_children_of

    before = {child.pid for child in psutil.Process().children()}
    manager = sync_playwright()
    instance = manager.start()
    drivers = driver_children_of(os.getpid(), before)
    reports: list[tuple[str, str]] = []
    try:
        yield instance
    finally:
        if len(drivers) != 1:
            manager.__exit__(None, None, None)  # cannot happen, unless Playwright changes how it starts its driver
        else:
            with DriverWatch(drivers[0], lambda cause, text: reports.append((cause, text))) as watch:
                for browser in reversed(_LAUNCHED):
                    close_browser(browser)
                watch.stopping = True
                manager.__exit__(None, None, None)
        _LAUNCHED.clear()
        for cause, text in reports:
            report_driver_hang(request.config, drivers[0], cause, text)


def close_browser(browser) -> None:
    """Close the browser's contexts, then the browser; a browser already closed (or gone) is fine."""
    try:
        if browser.is_connected():
            for context in browser.contexts:
                context.close()
            browser.close()
    except Exception as exc:  # noqa: BLE001 (the session is ending: report, then close the next one)
        print(f"closing a browser at the session's end failed: {exc!r}", file=sys.stderr)


DRIVER_REPORTS = "playwright-driver-*.txt"


def report_driver_hang(config: pytest.Config, pid: int, cause: str, text: str) -> None:
    """Say loudly that the driver had to be ended, and why; the terminal summary repeats it (also from workers)."""
    message = f"PLAYWRIGHT DRIVER DID NOT EXIT: ended it by PID {pid}.\nCause: {cause}\n{text}\n"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / DRIVER_REPORTS.replace("*", f"{os.getpid()}-{pid}")).write_text(message)
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "!" * 100 + "\n" + message + "!" * 100, file=sys.stderr, flush=True)


def launch_chromium(playwright, *extra_args: str):
    """Debian's Chromium (never `playwright install`), headless, with no calls to the outside world."""
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=[*CHROMIUM_ARGS, *extra_args])
    _LAUNCHED.append(browser)
    return browser


@pytest.fixture(scope="session")
def chromium(playwright) -> Iterator:
    browser = launch_chromium(playwright)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(autouse=True)
def _no_experiment_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mlflow.set_experiment` exports MLFLOW_EXPERIMENT_ID/NAME: without this, a later test's subprocess (a benchmark
    on its own stack) inherits an experiment id its tracking server never had."""
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests leave screenshots and other artifacts for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME, cache and config of the test's own, and no MLFLOW_OIDC_* settings from the developer's shell."""
    for key in list(os.environ):
        if key.startswith("MLFLOW_OIDC_") or key in (
            "MLFLOW_TRACKING_URI",
            "MLFLOW_TRACKING_AUTH",
            "MLFLOW_TRACKING_TOKEN",
        ):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    return home


@pytest.fixture
def kernel_env(stack, isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the demo's JupyterLab passes to kernels (where MLflow and the IdP are); returns the token cache folder."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.mlflow_url)
    monkeypatch.setenv("MLFLOW_OIDC_ISSUER", stack.issuer)
    monkeypatch.setenv("MLFLOW_OIDC_CLIENT_ID", stack.endpoints["clients"]["jupyter"]["client_id"])
    monkeypatch.setenv("MLFLOW_OIDC_AUDIENCE", stack.endpoints["audience"])
    return isolated_home / ".cache" / "mlflow-oidc"


# ---------------------------------------------------------------------------------------- the run's summary

_GROUP_TIMES: dict[str, list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Per-group wall time (first test's start to last test's end), from reports that workers send (or our own)."""
    if hasattr(report, "node"):  # sent by an xdist worker
        times = _GROUP_TIMES.setdefault(group_of(report.nodeid), [report.start, report.stop, 0])
        times[0], times[1] = min(times[0], report.start), max(times[1], report.stop)
        times[2] += report.when == "call"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if _GROUP_TIMES:
        terminalreporter.section("wall time per xdist group")
        for group, (start, stop, tests) in sorted(_GROUP_TIMES.items(), key=lambda kv: kv[1][0] - kv[1][1]):
            terminalreporter.write_line(f"{group:>14}: {stop - start:7.1f} s, {tests} tests")
    began = getattr(config, "_ci_started", 0)
    for path in sorted(ARTIFACTS.glob(DRIVER_REPORTS)):
        if path.stat().st_mtime >= began:
            terminalreporter.section("Playwright driver ended by PID", sep="!", red=True, bold=True)
            terminalreporter.write_line(path.read_text())


def pytest_configure(config: pytest.Config) -> None:
    config._ci_started = time.time()  # type: ignore[attr-defined]  # driver reports written after this are ours


# The session's one Keycloak stack, shared by every folder (tests/keycloak, tests/oidc_auth, ...): defined here, at
# the root, so that pytest holds ONE fixture definition and starts Keycloak once per session.
from .support.keycloak import FIRST_START_TIMEOUT, keycloak, realm_settings  # noqa: E402, F401
