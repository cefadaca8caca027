"""The `prefix` setting moves the whole extension: UI, sign-in, broker, and what JupyterLab and kernels are told."""

from __future__ import annotations

import json
import re

import pytest

from ..support.kernels import run_in_kernel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(start_jupyter):
    return start_jupyter(app="jupyterlab", base_url="/user/alice/", args=("--MLflowOIDC.prefix=tracking",))


def test_jupyterlab_is_told_the_prefix_in_its_page_config(lab):
    page = lab.http().get(lab.url + "lab", timeout=60)
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  page.text, re.S).group(1))  # fmt: skip
    assert config["mlflowOidcPrefix"] == "tracking"


def test_the_sign_in_and_status_live_under_the_prefix(lab):
    status = lab.http().get(lab.url + "tracking/oauth/status", timeout=30).json()
    assert status["login_url"] == "/user/alice/tracking/oauth/login"
    assert status["ui_url"] == "/user/alice/tracking/"
    assert lab.http().get(lab.url + "mlflow/oauth/status", timeout=30).status_code == 404


def test_kernels_find_the_sign_in_page_under_the_prefix(lab):
    out = run_in_kernel(lab, """
from mlflow_oidc_jupyter.broker_contract import broker_from_env, server_paths
login_path, ui_path = server_paths(broker_from_env()[0])
print(ui_path, login_path)
""")  # fmt: skip
    assert out.split() == ["/user/alice/tracking/", "/user/alice/tracking/oauth/login"]
