"""Keycloak's login and device pages driven over plain HTTP, for flows that block the test's own thread (magics).

Playwright's sync API belongs to the thread that started it; a sign-in approved from a helper thread uses this.
"""

from __future__ import annotations

from urllib.parse import urljoin

import requests

from ..support.idp_pages import IdPPageError, _describe, _Page, _walk


class _Browser(requests.Session):
    """Cookies as a browser keeps them for http://127.0.0.1: Keycloak marks its cookies Secure, and browsers treat
    loopback as a secure origin, where requests would drop them (and Keycloak would answer "cookie not found")."""

    def request(self, *args, **kwargs):  # type: ignore[override]
        for cookie in self.cookies:
            cookie.secure = False
        return super().request(*args, **kwargs)


def _log_in(session: requests.Session, page: requests.Response, username: str, password: str) -> requests.Response:
    forms = [(action, fields) for action, fields in _Page(page.text).forms if "password" in fields]
    if page.status_code != 200 or len(forms) != 1:
        raise IdPPageError(f"expected Keycloak's login page: {_describe(page)}")
    action, fields = forms[0]
    answer = session.post(urljoin(page.url, action), data={**fields, "username": username, "password": password},
                          allow_redirects=False)  # fmt: skip
    return _walk(session, answer) if answer.is_redirect else answer


def approve_device(verification_uri_complete: str, username: str, password: str) -> None:
    """Open the device link, sign in as `username`; Keycloak then says the device is signed in."""
    session = _Browser()
    page = _walk(session, session.get(verification_uri_complete, allow_redirects=False))
    granting = _log_in(session, page, username, password)
    # Keycloak always asks the user to grant a device access, whatever the client's consent setting.
    forms = [(action, fields) for action, fields in _Page(granting.text).forms if "/consent" in action]
    if granting.status_code != 200 or len(forms) != 1:
        raise IdPPageError(f"expected Keycloak's grant page: {_describe(granting)}")
    action, fields = forms[0]
    # The "Yes" button (name="accept") is what a browser submits along with the form's hidden code.
    answer = session.post(urljoin(granting.url, action), data={**fields, "accept": ""}, allow_redirects=False)
    done = _walk(session, answer) if answer.is_redirect else answer
    if done.status_code != 200 or "Device Login Successful" not in done.text:
        raise IdPPageError(f"device sign-in did not succeed: {_describe(done)}")


def authorize(authorization_url: str, username: str, password: str) -> str:
    """Sign in at `authorization_url`; return the redirect Location back to the client (not followed)."""
    session = _Browser()
    page = _walk(session, session.get(authorization_url, allow_redirects=False))
    done = page if page.is_redirect else _log_in(session, page, username, password)
    if not done.is_redirect:
        raise IdPPageError(f"Keycloak did not redirect back to the client: {_describe(done)}")
    return done.headers["Location"]
