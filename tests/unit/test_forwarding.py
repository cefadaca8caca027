"""What crosses the proxy: redirects mapped under our prefix, Jupyter's credentials kept back."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders

from mlflow_oidc_jupyter.server.forwarding import (
    forwarded_headers,
    query_string,
    request_headers,
    response_headers,
    rewrite_location,
    rewrite_ui_script,
    upstream_path,
)

UPSTREAM = "http://mlflow.internal:5000"
PREFIX = "/user/alice/mlflow/"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://mlflow.internal:5000/#/experiments/1", "/user/alice/mlflow/#/experiments/1"),
        ("http://mlflow.internal:5000/static-files/x.js?v=2", "/user/alice/mlflow/static-files/x.js?v=2"),
        ("/ajax-api/2.0/mlflow/runs/get?run_id=1", "/user/alice/mlflow/ajax-api/2.0/mlflow/runs/get?run_id=1"),
        ("/", "/user/alice/mlflow/"),
    ],
)
def test_redirects_to_the_tracking_server_stay_under_our_prefix(location, expected):
    assert rewrite_location(location, UPSTREAM, PREFIX) == expected


@pytest.mark.parametrize(
    "location",
    [
        "https://idp.example.org/login?next=/",  # the identity provider: the browser must go there itself
        "http://mlflow.internal:5001/x",  # same host, other port: another server
        "https://mlflow.internal:5000/x",  # other scheme
        "static-files/index.html",  # relative: the browser resolves it against our URL already
        "//evil.example.org/x",  # scheme-relative to another host
    ],
)
def test_redirects_elsewhere_are_left_alone(location):
    assert rewrite_location(location, UPSTREAM, PREFIX) == location


def test_a_tracking_server_under_a_path_maps_only_that_path():
    upstream = "https://gateway.example.org/mlflow-team"
    assert rewrite_location("/mlflow-team/#/models", upstream, PREFIX) == "/user/alice/mlflow/#/models"
    assert rewrite_location("/other-app/", upstream, PREFIX) == "/other-app/"


def test_jupyter_query_parameters_are_dropped_and_the_rest_kept_byte_for_byte():
    raw = "token=abc&experiment_name=a%2Fb%20c&_xsrf=x&%74oken=encoded&order=1&&flag"
    assert query_string(raw) == "experiment_name=a%2Fb%20c&order=1&flag"


def test_upstream_gets_the_bearer_token_and_none_of_the_browsers_credentials():
    incoming = HTTPHeaders()
    for name, value in [
        ("Cookie", "_xsrf=1; username-127-0-0-1=secret"),
        ("Authorization", "token jupyter-token"),
        ("X-XSRFToken", "1"),
        ("Origin", "http://127.0.0.1:8888"),
        ("X-Forwarded-User", "mallory"),
        ("Connection", "keep-alive, X-Custom-Hop"),
        ("X-Custom-Hop", "dropped: listed in Connection"),
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
    ]:
        incoming.add(name, value)

    outgoing = request_headers(incoming, "the-token")

    assert dict(outgoing.get_all()) == {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": "Bearer the-token",
    }


def test_upstream_cookies_and_hop_headers_never_reach_the_browser():
    upstream = HTTPHeaders()
    for name, value in [
        ("Set-Cookie", "session=upstream"),
        ("Server", "uvicorn"),
        ("Date", "today"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Type", "text/html"),
        ("X-Frame-Options", "SAMEORIGIN"),
    ]:
        upstream.add(name, value)

    assert list(response_headers(upstream)) == [("Content-Type", "text/html"), ("X-Frame-Options", "SAMEORIGIN")]


def test_new_tab_links_of_the_ui_point_under_the_prefix():
    script = b"window.open(`/#/experiments/${id}`);const s=`/static`"
    assert rewrite_ui_script(script) == b"window.open(`./#/experiments/${id}`);const s=`/static`"


BROWSER_CLAIMS = [
    ("X-Forwarded-Prefix", "/evil"),
    ("X-Forwarded-Port", "1"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Proto", "https"),
    ("x-forwarded-ssl", "on"),
    ("X-Real-IP", "10.0.0.2"),
    ("Forwarded", "for=10.0.0.3;host=evil.example"),
    ("X-Original-URL", "/api/2.0/mlflow/experiments/delete"),
    ("X-Original-URI", "/api/2.0/mlflow/experiments/delete"),
    ("X-HTTP-Method-Override", "DELETE"),
]


@pytest.mark.parametrize(("name", "value"), BROWSER_CLAIMS)
def test_what_the_browser_claims_about_proxies_never_passes(name, value):
    incoming = HTTPHeaders({name: value, "Accept": "application/json"})
    assert dict(request_headers(incoming, "t").get_all()) == {"Accept": "application/json", "Authorization": "Bearer t"}


def test_the_proxy_says_itself_where_the_ui_is_served():
    assert forwarded_headers(proto="https", host="lab.example", client_ip="10.1.1.1", prefix=PREFIX) == {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "lab.example",
        "X-Forwarded-For": "10.1.1.1",
        "X-Forwarded-Prefix": "/user/alice/mlflow",
    }


@pytest.mark.parametrize(
    "path",
    ["../admin", "ajax-api/../../x", "%2e%2e/x", "%2E%2E%2Fx", "a/%252e%252e/b", "a/./b", "a\\..\\b", "..", "x/.."],
)
def test_dot_segments_in_any_decoding_are_refused(path):
    with pytest.raises(ValueError, match="segments"):
        upstream_path(path)


@pytest.mark.parametrize("path", ["ajax-api/2.0/mlflow/runs/get", "static-files/a..b.js", "x/.hidden/y", "a%2Fb", ""])
def test_ordinary_paths_pass_unchanged(path):
    assert upstream_path(path) == path
