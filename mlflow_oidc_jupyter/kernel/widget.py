"""The ipywidgets login widget: shows the sign-in and the session's state; updated only through traits."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets

from ..oidc.client import DeviceAuthorization
from ..oidc.session import SessionSnapshot, SessionState
from .links import RunLink
from .markup import link
from .ticker import Ticker
from .view import SessionView, describe, duration

STYLE = (
    "<style>.mlflow-oidc td{padding:1px 12px 1px 0;vertical-align:top}"
    ".mlflow-oidc .code{font-size:2em;font-weight:bold;letter-spacing:.12em;font-family:monospace}"
    ".mlflow-oidc a{color:var(--jp-content-link-color,#1a73e8);text-decoration:underline}"
    ".mlflow-oidc .muted{opacity:.7}.mlflow-oidc .error{color:#b00020}</style>"
)


class LoginWidget(widgets.VBox):
    """Signed out → signing in (device code or link) → signed in → refresh failing / login required → signed out.

    `mode` says what is shown: signed_out, device, link, signed_in, failed. Every change is a trait update, which
    reaches the frontend from any thread; nothing is printed. The kernel's one ticker keeps countdowns current.
    """

    def __init__(
        self,
        *,
        on_sign_in: Callable[[LoginWidget], object],
        on_sign_out: Callable[[], object],
        on_cancel: Callable[[], object],
        tracking_uri: Callable[[], str | None],
        ui_url: Callable[[], str | None],
        refreshed_by: Callable[[], str],
        scope: Callable[[], str] = lambda: "",
        current_run: Callable[[], RunLink | None] = lambda: None,
        shared: Callable[[], bool] = lambda: False,
        ticker: Ticker | None = None,
    ) -> None:
        self.title = widgets.HTML()
        self.body = widgets.HTML()
        self.sign_in_button = widgets.Button(description="Sign in", button_style="primary", icon="sign-in")
        self.cancel_button = widgets.Button(description="Cancel", icon="times")
        self.sign_out_button = widgets.Button(description="Sign out", icon="sign-out")
        self.buttons = widgets.HBox([])
        super().__init__([self.title, self.body, self.buttons])
        self.add_class("mlflow-oidc")
        self.sign_in_button.on_click(lambda _b: on_sign_in(self))
        self.sign_out_button.on_click(lambda _b: on_sign_out())
        self.cancel_button.on_click(lambda _b: on_cancel())
        self._tracking_uri, self._ui_url = tracking_uri, ui_url
        self._refreshed_by, self._scope, self._current_run = refreshed_by, scope, current_run
        self._shared = shared
        self._lock = threading.RLock()
        self.mode = "signed_out"
        self._snapshot: SessionSnapshot | None = None
        self._device: DeviceAuthorization | None = None
        self._link: tuple[str, str] | None = None
        self._failure: str | None = None
        self._ticker = ticker
        self._render()
        if ticker is not None:
            ticker.add(self._tick)

    # -- Presenter -------------------------------------------------------------------------------------------

    def device_prompt(self, device: DeviceAuthorization) -> None:
        with self._lock:
            self.mode, self._device, self._failure = "device", device, None
            self._render()

    def link_prompt(self, url: str, note: str) -> None:
        with self._lock:
            self.mode, self._link, self._failure = "link", (url, note), None
            self._render()

    def update(self, snapshot: SessionSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            if snapshot.signed_in:
                self.mode, self._failure = "signed_in", None
            elif snapshot.state == SessionState.LOGIN_REQUIRED:
                self.mode, self._failure = "failed", snapshot.message or "Your session has ended."
            elif snapshot.state == SessionState.SIGNED_OUT and self.mode in ("signed_in", "device", "link"):
                # A flow that ended without tokens reports through failed(); this is a sign-out.
                self.mode = "signed_out" if self.mode == "signed_in" else self.mode
            self._render()

    def failed(self, message: str) -> None:
        with self._lock:
            self.mode, self._failure = "failed", message
            self._render()

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.remove(self._tick)
        super().close()

    # -- rendering -------------------------------------------------------------------------------------------

    def view(self) -> SessionView | None:
        if self._snapshot is None:
            return None
        return describe(
            self._snapshot,
            tracking_uri=self._tracking_uri(),
            ui_url=self._ui_url(),
            refreshed_by=self._refreshed_by(),
            scope=self._scope(),
        )

    def _render(self) -> None:
        with self._lock:
            title, body, buttons = getattr(self, f"_render_{self.mode}")()
            self._set(self.title, f"{STYLE}<b>MLflow</b> · {html.escape(title)}")
            self._set(self.body, body)
            if list(self.buttons.children) != buttons:
                self.buttons.children = buttons

    @staticmethod
    def _set(target: widgets.HTML, value: str) -> None:
        if target.value != value:  # no message to the frontend when nothing changed
            target.value = value

    @staticmethod
    def _set_label(button: widgets.Button, label: str) -> None:
        if button.description != label:
            button.description = label

    def _render_signed_out(self) -> tuple[str, str, list]:
        self._set_label(self.sign_in_button, "Sign in")
        reason = self._snapshot.message if self._snapshot is not None else None
        why = f"<div>{html.escape(reason)}</div>" if reason else ""
        return (
            "Not signed in",
            f'{why}<span class="muted">Run <code>%mlflow_login</code> or press Sign in.</span>',
            [self.sign_in_button],
        )

    def _render_device(self) -> tuple[str, str, list]:
        device = self._device
        assert device is not None
        target = device.verification_uri_complete or device.verification_uri
        left = device.expires_at - time.time()
        countdown = f"code expires in {duration(left)}" if left > 0 else "the code has expired"
        body = (
            f"<div>1. Open {link(target, device.verification_uri)} (new tab) and sign in.</div>"
            f"<div>2. Check that it shows this code:</div>"
            f'<div class="code">{html.escape(device.user_code)}</div>'
            f'<div class="muted">Waiting for approval… {countdown}</div>'
        )
        return "Signing in…", body, [self.cancel_button]

    def _render_link(self) -> tuple[str, str, list]:
        assert self._link is not None
        url, note = self._link
        body = f"<div>{link(url, 'Sign in')} — {html.escape(note)}</div><div class='muted'>Waiting for sign-in…</div>"
        return "Signing in…", body, [self.cancel_button]

    def _render_signed_in(self) -> tuple[str, str, list]:
        view = self.view()
        assert view is not None
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in view.lines())
        links = ""
        if view.ui_url:
            links = link(view.ui_url, "Open MLflow UI")
            run = self._current_run()
            if run is not None:
                # Relative to the page showing the notebook: right behind any proxy, base_url or hub prefix.
                links += f" · {link(view.ui_url + run.fragment, 'Open this run')} <span class='muted'>"
                links += f"({html.escape(run.run_name)})</span>"
            links = f"<div>{links}</div>"
        # On the server's sign-in the button ends this kernel's use only: say so on it.
        self._set_label(self.sign_out_button, "Sign out (this kernel)" if self._shared() else "Sign out")
        tip = "The Jupyter server, the MLflow UI and other notebooks stay signed in" if self._shared() else ""
        if self.sign_out_button.tooltip != tip:
            self.sign_out_button.tooltip = tip
        return view.title, f"<table>{rows}</table>{links}", [self.sign_out_button]

    def _render_failed(self) -> tuple[str, str, list]:
        self._set_label(self.sign_in_button, "Sign in again")
        message = self._failure or "Sign-in failed."
        return "Sign-in required", f'<div class="error">{html.escape(message)}</div>', [self.sign_in_button]

    def _tick(self) -> None:
        if self.mode in ("device", "signed_in"):
            self._render()
