"""The gate's policy against MLflow's own route table: every route of the installed MLflow is known and classified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from stack.gate.policy import Policy
from stack.gate.routes import ROUTES_FILE, RouteTable
from stack.gate.tokens import ALLOWED_ALGORITHMS

ROOT = Path(__file__).resolve().parent.parent
GATE_DIR = ROOT / "stack" / "gate"

POLICY = Policy.load(GATE_DIR / "policy.yaml")


@pytest.fixture(scope="module")
def installed_table() -> dict:
    """The installed MLflow's table, read in a child process (building MLflow's app has import-time side effects)."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(GATE_DIR)!r}); "
        "import routes; print(json.dumps(routes.from_mlflow()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_route_table_is_the_installed_mlflows(installed_table: dict) -> None:
    saved = json.loads(ROUTES_FILE.read_text())
    assert saved["mlflow_version"] == mlflow.__version__ == installed_table["mlflow_version"]
    added = [r for r in installed_table["routes"] if r not in saved["routes"]]
    gone = [r for r in saved["routes"] if r not in installed_table["routes"]]
    assert (added, gone) == ([], []), "run `python stack/gate/routes.py --write`, then review stack/gate/policy.yaml"


def test_every_handler_of_the_installed_mlflow_is_classified_by_a_rule(installed_table: dict) -> None:
    unclassified = sorted({r["handler"] for r in installed_table["routes"] if POLICY.rule_for(r["handler"]) is None})
    assert unclassified == [], "name these handlers in a rule of stack/gate/policy.yaml"


def test_only_destructive_handlers_need_admin() -> None:
    admin_only = {r.handler for r in POLICY.routes.routes if "Default" not in POLICY.rule_for(r.handler).roles}
    verbs = {h.lstrip("_").split("_", 1)[0] for h in admin_only}
    assert verbs == {"delete", "remove", "detach", "restore", "rename", "update", "create"}
    assert {h for h in admin_only if h.lstrip("_").startswith(("update", "create"))} == {
        "_update_experiment",  # renames only
        "_create_presigned_upload_url",
    }


def test_user_data_in_a_route_parameter_never_selects_another_route() -> None:
    table = POLICY.routes
    assert [r.handler for r in table.match("POST", "/gateway/remove-pii/mlflow/invocations")] == ["invocations"]
    mcp = table.match("GET", "/ajax-api/3.0/mlflow/mcp-servers/purge-helper")
    assert {r.handler for r in mcp} == {"get_mcp_server"}
    assert [r.handler for r in table.match("HEAD", "/static-files/delete.js")] == ["serve_static_file"]


def test_static_prefix_is_part_of_every_route() -> None:
    prefixed = Policy.load(GATE_DIR / "policy.yaml", static_prefix="/mlflow-prefix/")
    bob = ["Default"]
    assert prefixed.decide("POST", "/mlflow-prefix/api/2.0/mlflow/runs/log-metric", "bob", bob).allowed
    denied = prefixed.decide("POST", "/mlflow-prefix/api/2.0/mlflow/runs/delete", "bob", bob)
    assert (denied.allowed, denied.rule) == (False, "delete")
    assert prefixed.decide("POST", "/api/2.0/mlflow/runs/log-metric", "bob", bob).rule == "unknown-route"


def test_gate_accepts_exactly_the_packages_signature_algorithms() -> None:
    from mlflow_oidc_jupyter.oidc.provider import ALLOWED_ALGORITHMS as PACKAGE

    assert ALLOWED_ALGORITHMS == PACKAGE


def test_route_table_loads_from_its_json() -> None:
    table = RouteTable.load()
    assert table.mlflow_version == mlflow.__version__
    assert len(table.routes) == len(json.loads(ROUTES_FILE.read_text())["routes"])
