"""Drive the local IdP's own HTML pages over HTTP (login, device code) as a user would, without a browser."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests


class IdPPageError(RuntimeError):
    """The IdP answered with a page the helper did not expect (wrong password, expired code, error page)."""


class _Page(HTMLParser):
    """The forms of a page (action and named input values) and its visible text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._hidden = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("style", "script", "title"):
            self._hidden += 1
        elif tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and a.get("name") and self.forms:
            self.forms[-1][1][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if data.strip() and not self._hidden:
            self.text.append(data.strip())


def _describe(response: requests.Response) -> str:
    return f"{response.status_code} at {response.url.split('?')[0]}: {' '.join(_Page(response.text).text)[:300]}"


def _walk(session: requests.Session, response: requests.Response) -> requests.Response:
    """Follow redirects within the IdP; return the first page, or the redirect that leaves the IdP."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(response.url))
    while response.is_redirect:
        location = urljoin(response.url, response.headers["Location"])
        if "{0.scheme}://{0.netloc}".format(urlsplit(location)) != origin:
            return response
        response = session.get(location, allow_redirects=False)
    return response


def _submit(session: requests.Session, page: requests.Response, **values: str) -> requests.Response:
    """Submit the page's only form with `values` filled in (the IdP's pages carry one form each)."""
    forms = _Page(page.text).forms
    if page.status_code != 200 or len(forms) != 1:
        raise IdPPageError(f"unexpected IdP page: {_describe(page)}")
    action, fields = forms[0]
    return session.post(urljoin(page.url, action), data={**fields, **values}, allow_redirects=False)


def _login(session: requests.Session, page: requests.Response, username: str, password: str) -> requests.Response:
    if 'name="password"' not in page.text:
        raise IdPPageError(f"expected the IdP login page: {_describe(page)}")
    answer = _submit(session, page, username=username, password=password)
    if not answer.is_redirect:
        raise IdPPageError(f"IdP login as {username!r} failed: {_describe(answer)}")
    return _walk(session, answer)


def authorize(authorization_url: str, username: str, password: str, session: requests.Session | None = None) -> str:
    """Sign in at `authorization_url`; return the redirect Location to the client (code, state, iss), unrequested.

    Pass `session` to keep the IdP's session cookie, as a browser would (for a later `logout`).
    """
    session = session or requests.Session()
    page = _walk(session, session.get(authorization_url, allow_redirects=False))
    if not page.is_redirect:
        page = _login(session, page, username, password)
    if not page.is_redirect:
        raise IdPPageError(f"IdP did not redirect back to the client: {_describe(page)}")
    return page.headers["Location"]


def approve_device(verification_uri_complete: str, username: str, password: str) -> None:
    """Confirm the device code shown in `verification_uri_complete` and sign in as `username`."""
    session = requests.Session()
    # The link lands on a self-submitting form (user code + xsrf), which a browser posts on load.
    confirm = _submit(session, session.get(verification_uri_complete, allow_redirects=False))
    if "op.deviceConfirmForm" not in confirm.text:
        raise IdPPageError(f"expected the device confirmation page: {_describe(confirm)}")
    done = _login(session, _walk(session, _submit(session, confirm)), username, password)
    if done.status_code != 200 or "Device connected" not in done.text:
        raise IdPPageError(f"device sign-in did not succeed: {_describe(done)}")


def deny_device(verification_uri_complete: str) -> None:
    """Refuse the device code shown in `verification_uri_complete` on the confirm page; no sign-in needed."""
    session = requests.Session()
    confirm = _submit(session, session.get(verification_uri_complete, allow_redirects=False))
    if "op.deviceConfirmForm" not in confirm.text:
        raise IdPPageError(f"expected the device confirmation page: {_describe(confirm)}")
    # The Deny button submits the confirm form with oidc-provider's `abort` field.
    denied = _walk(session, _submit(session, confirm, abort="yes"))
    if "Sign-in denied" not in denied.text:
        raise IdPPageError(f"device sign-in was not denied: {_describe(denied)}")


def logout(end_session_url: str, session: requests.Session) -> str:
    """Confirm RP-initiated logout at `end_session_url`; return the redirect Location (post_logout_redirect_uri)."""
    done = _walk(session, _submit(session, session.get(end_session_url, allow_redirects=False)))
    if not done.is_redirect:
        raise IdPPageError(f"IdP logout did not redirect back: {_describe(done)}")
    return done.headers["Location"]
